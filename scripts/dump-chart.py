#!/usr/bin/env python3
"""Draw dirty-bench --dump's JSON as an SVG bar chart (standard library only).

    scripts/dump-chart.py docs/bench-dump.json docs/bench-dump.svg

One group of bars per file system and dirty fraction, one bar per method:
throughput in MiB/s, with its speed against the pwrite loop written on it.
"""
import json
import sys
from xml.sax.saxutils import escape

COLOURS = {
    "libdirty:io_uring": "#1b7837",
    "libdirty:pwritev": "#7fbf7b",
    "raw:pwrite-loop": "#762a83",
    "raw:pwritev": "#af8dc3",
}


def main(src, dst):
    with open(src) as f:
        data = json.load(f)
    results = data["results"]
    groups = []
    for r in results:
        key = (r["fs"], r["fraction"])
        if key not in groups:
            groups.append(key)
    methods = list(dict.fromkeys(r["method"] for r in results))
    top = max(r["mib_per_s"] for r in results) * 1.1
    bar, gap, left, height, base = 26, 30, 70, 300, 360
    width = left + len(groups) * (len(methods) * bar + gap) + 20
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="11">' % (width, base + 90),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="22" font-size="14" font-weight="bold">%s</text>' % (
               left, escape("Writing dirty pages of %d MiB to a file: MiB/s (x = vs the pwrite loop)"
                            % (data["size"] >> 20)))]
    for tick in range(0, int(top) + 1, 1000):
        y = base - tick / top * height
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (left, width - 10, y, y))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%d</text>' % (left - 6, y + 4, tick))
    x = left + gap / 2
    for fs, fraction in groups:
        for m in methods:
            r = next((r for r in results if (r["fs"], r["fraction"], r["method"]) == (fs, fraction, m)), None)
            if r:
                h = r["mib_per_s"] / top * height
                out.append('<rect x="%.1f" y="%.1f" width="%d" height="%.1f" fill="%s">'
                           '<title>%s</title></rect>' % (
                               x, base - h, bar - 2, h, COLOURS.get(m, "#888"),
                               escape("%s %s %g%%: %.0f MiB/s, %.2f ms, %.2fx the pwrite loop"
                                      % (m, fs, fraction * 100, r["mib_per_s"], r["ms"],
                                         r["speedup_vs_pwrite_loop"]))))
                out.append('<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%.1fx</text>'
                           % (x + bar / 2 - 1, base - h - 3, r["speedup_vs_pwrite_loop"]))
            x += bar
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%s %g%%</text>'
                   % (x - len(methods) * bar / 2, base + 16, fs, fraction * 100))
        x += gap
    for i, m in enumerate(methods):
        lx = left + i * 170
        out.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>' % (lx, base + 40, COLOURS.get(m, "#888")))
        out.append('<text x="%d" y="%d">%s</text>' % (lx + 16, base + 50, escape(m)))
    out.append('<text x="%d" y="%d" fill="#555">%s</text>' % (
        left, base + 78, escape("io_uring wrote with: %s; median of %d; buffered, no fsync"
                                % (data.get("io_uring_method", "?"), data["reps"]))))
    out.append("</svg>")
    with open(dst, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: dump-chart.py BENCH.json OUT.svg")
    main(sys.argv[1], sys.argv[2])
