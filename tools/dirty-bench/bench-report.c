/* SPDX-License-Identifier: MIT */
/* bench-report: tables, JSON, SVG charts and a progress line for dirty-bench. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "bench-report.h"
#include "json.h"
#include "xml.h"

/* 64M, 1G, 1T; 1.5G when not a whole number of the largest unit. */
static void format_size(char *buf, size_t size, size_t bytes)
{
	static const char units[] = "KMGTPE";
	int unit = -1;
	double value = (double)bytes;

	while (value >= 1024 && units[unit + 1]) {
		value /= 1024;
		unit++;
	}
	if (unit < 0)
		snprintf(buf, size, "%zuB", bytes);
	else if (value == floor(value))
		snprintf(buf, size, "%.0f%c", value, units[unit]);
	else
		snprintf(buf, size, "%.1f%c", value, units[unit]);
}

/* Three significant digits without exponents for the usual range; "-" when unknown. */
static void format_number(char *buf, size_t size, double value)
{
	double magnitude = fabs(value);

	if (!isfinite(value))
		snprintf(buf, size, "-");
	else if (magnitude >= 100)
		snprintf(buf, size, "%.0f", value);
	else if (magnitude >= 10)
		snprintf(buf, size, "%.1f", value);
	else if (magnitude >= 1)
		snprintf(buf, size, "%.2f", value);
	else
		snprintf(buf, size, "%.3g", value);
}

int bench_case_describe(char *buf, size_t size, const struct bench_case *c)
{
	char bytes[32], touched[64] = "", fraction[32];

	format_size(bytes, sizeof(bytes), c->size);
	if (c->sparse) {
		char t[32];

		format_size(t, sizeof(t), c->touched);
		snprintf(touched, sizeof(touched), " sparse (%s touched)", t);
	}
	snprintf(fraction, sizeof(fraction), "%g%%", c->fraction * 100);	/* 0.1%, 1%, 100% */
	return snprintf(buf, size, "%s %s%s %s %s, %d %s%s, %s", bytes,
			c->memory ? c->memory : "?", touched, fraction,
			c->pattern ? c->pattern : "?", c->threads,
			c->process ? "writer process" : "thread",
			c->threads == 1 ? "" : c->process ? "es" : "s", c->thp ? "THP" : "no THP");
}

static bool same_string(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/* Everything but the fraction: the cases that share one chart. */
static bool same_series(const struct bench_case *a, const struct bench_case *b)
{
	return same_string(a->memory, b->memory) && a->size == b->size &&
	       same_string(a->pattern, b->pattern) && a->threads == b->threads &&
	       a->thp == b->thp && a->sparse == b->sparse && a->process == b->process;
}

bool bench_case_equal(const struct bench_case *a, const struct bench_case *b)
{
	return same_series(a, b) && a->fraction == b->fraction && a->touched == b->touched;
}

/* A result whose numbers can be shown and compared. */
static bool usable(const struct bench_result *r)
{
	return !r->skip_reason && r->ok && isfinite(r->cycle_ms) && r->cycle_ms > 0;
}

#define TABLE_ROW "  %-*s %9s %14s %11s %10s %9s %9s  %s"

static void print_row(FILE *f, const struct bench_result *r, int method_width,
		      const struct bench_result *reference)
{
	char setup[32] = "-", write[32] = "-", collect[32] = "-", cycle[32] = "-";
	char ratio[32] = "-", state[32] = "-";

	if (!r->skip_reason) {
		format_number(setup, sizeof(setup), r->setup_ms);
		format_number(write, sizeof(write), r->write_ns_per_page);
		format_number(collect, sizeof(collect), r->collect_ms);
		format_number(cycle, sizeof(cycle), r->cycle_ms);
		if (reference && isfinite(r->cycle_ms)) {
			format_number(ratio, sizeof(ratio) - 1, r->cycle_ms / reference->cycle_ms);
			strcat(ratio, "x");
		}
		if (r->library_bytes)
			format_size(state, sizeof(state), r->library_bytes);
	}
	fprintf(f, TABLE_ROW, method_width, r->method ? r->method : "?", setup, write, collect,
		cycle, ratio, state, r->skip_reason ? "skip: " : r->ok ? "ok" : "WRONG");
	/* a reason from strerror() or the kernel must not break the table's lines */
	for (const char *s = r->skip_reason; s && *s; s++)
		fputc((unsigned char)*s < 0x20 ? ' ' : *s, f);
	fputc('\n', f);
}

void bench_print_table(FILE *f, const struct bench_result *r, size_t n, const char *reference)
{
	int method_width = (int)strlen("method");
	size_t i, j, k;

	for (i = 0; i < n; i++)
		if (r[i].method && (int)strlen(r[i].method) > method_width)
			method_width = (int)strlen(r[i].method);
	if (reference)
		fprintf(f, "x vs ref: cycle ms / cycle ms of %s in the same case\n", reference);

	for (i = 0; i < n; i++) {
		const struct bench_result *ref = NULL;
		char header[256];

		/* each case is printed once, where it first appears */
		for (j = 0; j < i && !bench_case_equal(&r[j].c, &r[i].c); j++)
			;
		if (j < i)
			continue;
		for (k = i; k < n && reference; k++)
			if (bench_case_equal(&r[k].c, &r[i].c) && usable(&r[k]) &&
			    same_string(r[k].method, reference))
				ref = &r[k];
		bench_case_describe(header, sizeof(header), &r[i].c);
		fprintf(f, "\n%s\n", header);
		fprintf(f, TABLE_ROW "\n", method_width, "method",
			"setup ms", "write ns/page", "collect ms", "cycle ms", "x vs ref",
			"state", "result");
		for (k = i; k < n; k++)
			if (bench_case_equal(&r[k].c, &r[i].c))
				print_row(f, &r[k], method_width, ref);
	}
}

static void json_number(FILE *f, double value)
{
	if (isfinite(value))
		fprintf(f, "%.6g", value);
	else
		fputs("null", f);
}

void bench_write_json(FILE *f, const struct bench_result *r, size_t n, const char *machine_json)
{
	size_t i;

	fprintf(f, "{\n  \"machine\": %s,\n  \"results\": [", machine_json ? machine_json : "null");
	for (i = 0; i < n; i++) {
		const struct bench_result *x = &r[i];

		fprintf(f, "%s\n    {\"memory\": ", i ? "," : "");
		json_string(f, x->c.memory);
		fprintf(f, ", \"size\": %zu, \"fraction\": ", x->c.size);
		json_number(f, x->c.fraction);
		fputs(", \"pattern\": ", f);
		json_string(f, x->c.pattern);
		fprintf(f, ", \"threads\": %d, \"process\": %s, \"thp\": %s, \"sparse\": %s, "
			   "\"touched\": %zu",
			x->c.threads, x->c.process ? "true" : "false", x->c.thp ? "true" : "false",
			x->c.sparse ? "true" : "false", x->c.touched);
		fputs(",\n     \"method\": ", f);
		json_string(f, x->method);
		fprintf(f, ", \"ok\": %s, \"skip_reason\": ", x->ok ? "true" : "false");
		json_string(f, x->skip_reason);
		fputs(",\n     \"setup_ms\": ", f);
		json_number(f, x->setup_ms);
		fputs(", \"write_ns_per_page\": ", f);
		json_number(f, x->write_ns_per_page);
		fputs(", \"collect_ms\": ", f);
		json_number(f, x->collect_ms);
		fputs(", \"cycle_ms\": ", f);
		json_number(f, x->cycle_ms);
		fprintf(f, ", \"cycles\": %d, \"pages_per_cycle\": %zu, \"library_bytes\": %zu}",
			x->cycles, x->pages_per_cycle, x->library_bytes);
	}
	fputs("\n  ]\n}\n", f);
}

/* ---- SVG ---- */

enum {
	SVG_WIDTH = 800, SVG_HEIGHT = 500,
	PLOT_LEFT = 78, PLOT_RIGHT = 570, PLOT_TOP = 50, PLOT_BOTTOM = 425,
	PLOT_PAD = 14,	/* keeps the end markers off the frame */
};

/* Tableau 10: distinct, and readable on white. */
static const char *const colours[] = {
	"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
	"#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
};
#define COLOUR_COUNT (sizeof(colours) / sizeof(colours[0]))

struct log_axis {
	int low, high;		/* decades: 10^low .. 10^high */
	double from, to;	/* pixels */
};

static double axis_position(const struct log_axis *a, double value)
{
	double t = (log10(value) - a->low) / (a->high - a->low);

	return a->from + t * (a->to - a->from);
}

/* Shape by method too, so lines stay apart in grey print and for colour-blind readers. */
static void svg_marker(FILE *f, size_t method, double x, double y)
{
	const char *colour = colours[method % COLOUR_COUNT];

	switch (method % 4) {
	case 0:
		fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\"/>\n", x, y, colour);
		break;
	case 1:
		fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"8\" height=\"8\" fill=\"%s\"/>\n",
			x - 4, y - 4, colour);
		break;
	case 2:
		fprintf(f, "<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f\" fill=\"%s\"/>\n",
			x, y - 5.5, x + 5, y + 4, x - 5, y + 4, colour);
		break;
	default:
		fprintf(f, "<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f\" fill=\"%s\"/>\n",
			x, y - 5.5, x + 5.5, y, x, y + 5.5, x - 5.5, y, colour);
	}
}

/* Major gridline and label at each decade, light ones at 2..9 times it. */
static void svg_grid(FILE *f, const struct log_axis *a, bool vertical_lines, bool percent)
{
	int decade, m;

	for (decade = a->low; decade <= a->high; decade++) {
		for (m = 1; m <= 9 && (m == 1 || decade < a->high); m++) {
			double p = axis_position(a, m * pow(10, decade));

			if (vertical_lines)
				fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"", p,
					PLOT_TOP, p, PLOT_BOTTOM);
			else
				fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"",
					PLOT_LEFT, p, PLOT_RIGHT, p);
			fprintf(f, " stroke=\"%s\"/>\n", m == 1 ? "#c8c8c8" : "#ececec");
		}
		if (vertical_lines)
			fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g%s</text>\n",
				axis_position(a, pow(10, decade)), PLOT_BOTTOM + 18,
				pow(10, decade) * (percent ? 100 : 1), percent ? "%" : "");
		else
			fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
				PLOT_LEFT - 6, axis_position(a, pow(10, decade)) + 4,
				pow(10, decade));
	}
}

int bench_write_svg(const char *path, const char *title, const struct bench_result *r, size_t n,
		    const struct bench_case *filter)
{
	struct log_axis x_axis = { -3, 0, PLOT_LEFT + PLOT_PAD, PLOT_RIGHT - PLOT_PAD };
	struct log_axis y_axis = { 0, 0, PLOT_BOTTOM - PLOT_PAD, PLOT_TOP + PLOT_PAD };
	double low = INFINITY, high = -INFINITY;
	size_t *shown = NULL, *sorted = NULL, shown_count = 0, method_count = 0, i, j, m;
	const char **methods = NULL;
	FILE *f = NULL;
	int err = 0;

	if (!path || !filter || (n && !r))
		return -EINVAL;
	shown = calloc(n + 1, sizeof(*shown));
	sorted = calloc(n + 1, sizeof(*sorted));
	methods = calloc(n + 1, sizeof(*methods));
	if (!shown || !sorted || !methods) {
		err = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (!usable(&r[i]) || !r[i].method || !same_series(&r[i].c, filter) ||
		    !(r[i].c.fraction > 0) || !isfinite(r[i].c.fraction))
			continue;
		shown[shown_count++] = i;
		low = fmin(low, r[i].cycle_ms);
		high = fmax(high, r[i].cycle_ms);
		x_axis.low = (int)fmin(x_axis.low, floor(log10(r[i].c.fraction)));
		x_axis.high = (int)fmax(x_axis.high, ceil(log10(r[i].c.fraction)));
		for (m = 0; m < method_count && strcmp(methods[m], r[i].method); m++)
			;
		if (m == method_count)
			methods[method_count++] = r[i].method;
	}
	if (shown_count) {
		y_axis.low = (int)floor(log10(low));
		y_axis.high = (int)ceil(log10(high));
	}
	if (y_axis.high <= y_axis.low)
		y_axis.high = y_axis.low + 1;

	f = fopen(path, "w");
	if (!f) {
		err = -errno;
		goto out;
	}
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
		"viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n<title>",
		SVG_WIDTH, SVG_HEIGHT, SVG_WIDTH, SVG_HEIGHT);
	xml_text(f, title);
	fprintf(f, "</title>\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
		"<text x=\"%d\" y=\"30\" text-anchor=\"middle\" font-size=\"16\" "
		"font-weight=\"bold\">", SVG_WIDTH / 2);
	xml_text(f, title);
	fputs("</text>\n", f);

	svg_grid(f, &x_axis, true, true);
	svg_grid(f, &y_axis, false, false);
	fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#333\"/>\n",
		PLOT_LEFT, PLOT_TOP, PLOT_RIGHT - PLOT_LEFT, PLOT_BOTTOM - PLOT_TOP);
	fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">dirty fraction per cycle (log scale)</text>\n",
		(PLOT_LEFT + PLOT_RIGHT) / 2, PLOT_BOTTOM + 42);
	fprintf(f, "<text transform=\"translate(20 %d) rotate(-90)\" text-anchor=\"middle\">"
		"cycle time, ms (log scale)</text>\n", (PLOT_TOP + PLOT_BOTTOM) / 2);
	if (!shown_count)
		fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#666\">no results</text>\n",
			(PLOT_LEFT + PLOT_RIGHT) / 2, (PLOT_TOP + PLOT_BOTTOM) / 2);

	for (m = 0; m < method_count; m++) {
		const char *colour = colours[m % COLOUR_COUNT];
		double legend_y = PLOT_TOP + 10 + 22.0 * m;
		size_t count = 0;

		/* this method's points, by fraction (insertion sort: a handful of points) */
		for (i = 0; i < shown_count; i++) {
			const struct bench_result *p = &r[shown[i]];

			if (strcmp(p->method, methods[m]))
				continue;
			for (j = count++; j > 0 && r[sorted[j - 1]].c.fraction > p->c.fraction; j--)
				sorted[j] = sorted[j - 1];
			sorted[j] = shown[i];
		}
		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colour);
		for (i = 0; i < count; i++)
			fprintf(f, "%s%.1f,%.1f", i ? " " : "",
				axis_position(&x_axis, r[sorted[i]].c.fraction),
				axis_position(&y_axis, r[sorted[i]].cycle_ms));
		fputs("\"/>\n", f);
		for (i = 0; i < count; i++)
			svg_marker(f, m, axis_position(&x_axis, r[sorted[i]].c.fraction),
				   axis_position(&y_axis, r[sorted[i]].cycle_ms));

		fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n",
			PLOT_RIGHT + 14, legend_y, PLOT_RIGHT + 40, legend_y, colour);
		svg_marker(f, m, PLOT_RIGHT + 27, legend_y);
		fprintf(f, "<text x=\"%d\" y=\"%.1f\">", PLOT_RIGHT + 46, legend_y + 4);
		xml_text(f, methods[m]);
		fputs("</text>\n", f);
	}
	fputs("</svg>\n", f);

	if (ferror(f))
		err = -EIO;
	if (fclose(f) && !err)
		err = -errno;
out:
	free(shown);
	free(sorted);
	free(methods);
	return err;
}

/* ---- progress ---- */

void bench_progress(FILE *f, size_t done, size_t total, const char *what)
{
	struct winsize window;
	int columns = 80;
	char line[512];

	if (!isatty(fileno(f)))
		return;
	if (ioctl(fileno(f), TIOCGWINSZ, &window) == 0 && window.ws_col > 0)
		columns = window.ws_col;
	snprintf(line, sizeof(line), "[%zu/%zu] %s", done, total, what ? what : "");
	/* a line that wraps could not be overwritten by \r: cut it to the terminal */
	if (columns - 1 < (int)sizeof(line) && (int)strlen(line) > columns - 1)
		line[columns - 1] = '\0';
	fprintf(f, "\r\033[K%s", line);
	fflush(f);
}

void bench_progress_end(FILE *f)
{
	if (!isatty(fileno(f)))
		return;
	fputs("\r\033[K", f);
	fflush(f);
}
