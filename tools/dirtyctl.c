/* SPDX-License-Identifier: MIT */
/* dirtyctl: see which pages programs write.  A thin user of the public API. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "libdirty.h"

enum { EXIT_USAGE = 2 };

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static int verb_probe(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *const *names = dirty_backend_names();
	char why[512], auto_why[1024];
	const char *chosen = NULL;
	struct dirty_tracker *t;
	struct utsname uts;
	bool json = false;
	int opt, i;

	while ((opt = getopt_long(argc, argv, "jh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			json = true;
			break;
		case 'h':
			printf("usage: dirtyctl probe [--json]\n"
			       "Show the kernel, which backends can run here and why not.\n");
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	uname(&uts);
	/* the automatic choice, as dirty_tracker_new() with no options makes it */
	if (dirty_tracker_new(NULL, &t) == 0) {
		chosen = dirty_tracker_backend(t);
		dirty_tracker_free(t);
	}
	dirty_backend_probe("auto", 0, auto_why, sizeof(auto_why));

	if (json) {
		printf("{\"kernel\": ");
		json_string(stdout, uts.release);
		printf(", \"backends\": [");
		for (i = 0; names[i]; i++) {
			int err = dirty_backend_probe(names[i], 0, why, sizeof(why));

			printf("%s{\"name\": ", i ? ", " : "");
			json_string(stdout, names[i]);
			printf(", \"usable\": %s, \"reason\": ", err ? "false" : "true");
			json_string(stdout, why);
			printf("}");
		}
		printf("], \"default\": ");
		if (chosen)
			json_string(stdout, chosen);
		else
			printf("null");
		printf(", \"default_reason\": ");
		json_string(stdout, auto_why);
		printf("}\n");
		return chosen ? 0 : 1;
	}
	printf("kernel: %s %s\n\n", uts.sysname, uts.release);
	for (i = 0; names[i]; i++) {
		int err = dirty_backend_probe(names[i], 0, why, sizeof(why));

		printf("  %-11s %-8s %s\n", names[i], err ? "no" : "usable", why);
	}
	printf("\ndefault: %s\n  because %s\n", chosen ? chosen : "(none)", auto_why);
	return chosen ? 0 : 1;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: dirtyctl VERB [options]\n\n"
		   "verbs:\n"
		   "  probe [--json]   kernel release and which backends can run here\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "probe"))
		return verb_probe(argc - 1, argv + 1);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "dirtyctl: unknown verb \"%s\"\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
