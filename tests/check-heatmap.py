#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Check the SVGs of tools/dirtyctl/heatmap.c that tests/test-heatmap.c writes.

    check-heatmap.py TEST-HEATMAP OUT.svg

Runs TEST-HEATMAP OUT.svg OUT-many.svg, which prints what it added, then
parses each SVG with xml.etree (so it must be well-formed XML) and checks:
every cell rect has data-pages, a positive integer, and a tooltip that says
the same count; no two cells share a place; the cells sum to the root's
data-total-pages, which is the total added, and per mapping to what was
added to it; the drawing keeps its budget of columns.  For OUT.svg, also
cells whose counts are known exactly, and names with XML specials and
invalid UTF-8.  Python 3 standard library only.
"""
import os
import collections
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

PAGE = os.sysconf("SC_PAGE_SIZE")  # test-heatmap counts in the kernel's pages

SVG = "{http://www.w3.org/2000/svg}"
TOOLTIP = re.compile(r"^(?P<name>.*) 0x(?P<from>[0-9a-f]+)-0x(?P<to>[0-9a-f]+), "
                     r"t=(?P<t0>[0-9.]+)-(?P<t1>[0-9.]+) s: (?P<pages>[0-9]+) pages?$")

failures = []


def fail(message):
    failures.append(message)
    print("FAIL: " + message, file=sys.stderr)


def cells_of(root):
    """(start of its <g data-mapping>, rect, parsed tooltip) for every rect with data-pages."""
    parent = {child: node for node in root.iter() for child in node}
    for rect in root.iter(SVG + "rect"):
        group = parent.get(rect)
        start = group.get("data-mapping") if group is not None else None
        if rect.get("data-pages") is None and start is None:
            continue    # the background, bands and legend
        title = rect.find(SVG + "title")
        match = TOOLTIP.match(title.text if title is not None and title.text else "")
        yield (int(start, 16) if start is not None else None), rect, match


def check_file(path, total, per_mapping):
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        fail(f"{path}: not well-formed XML: {e}")
        return None
    if root.tag != SVG + "svg":
        fail(f"{path}: the root is {root.tag}, not an SVG <svg>")
        return None
    declared = root.get("data-total-pages")
    if declared is None or not re.fullmatch(r"[0-9]+", declared):
        fail(f"{path}: data-total-pages is {declared!r}")
        return None

    cell_sum = 0
    sums = collections.Counter()
    places = set()
    xs = set()
    cells = []
    for start, rect, tooltip in cells_of(root):
        pages = rect.get("data-pages")
        if start is None:
            fail(f"{path}: a cell outside any <g data-mapping>: {ET.tostring(rect)[:120]!r}")
            continue
        if pages is None:
            fail(f"{path}: a rect in mapping 0x{start:x} without data-pages")
            continue
        if not re.fullmatch(r"[1-9][0-9]*", pages):
            fail(f"{path}: data-pages=\"{pages}\" (0 cells must be left out)")
            continue
        if tooltip is None:
            fail(f"{path}: the tooltip of a cell of 0x{start:x} does not read as expected")
            continue
        if int(tooltip["pages"]) != int(pages):
            fail(f"{path}: a tooltip says {tooltip['pages']} pages, data-pages {pages}")
        place = (rect.get("x"), rect.get("y"))
        if place in places:
            fail(f"{path}: two cells at x={place[0]} y={place[1]}")
        places.add(place)
        xs.add(rect.get("x"))
        cell_sum += int(pages)
        sums[start] += int(pages)
        cells.append((start, rect, tooltip))

    if cell_sum != int(declared):
        fail(f"{path}: the cells sum to {cell_sum}, data-total-pages is {declared}")
    if int(declared) != total:
        fail(f"{path}: data-total-pages is {declared}, {total} pages were added")
    for start, pages in per_mapping.items():
        if sums[start] != pages:
            fail(f"{path}: mapping 0x{start:x}: cells sum to {sums[start]}, {pages} were added")
    for start in set(sums) - set(per_mapping):
        fail(f"{path}: cells for mapping 0x{start:x}, to which nothing was added")
    if len(xs) > 480:
        fail(f"{path}: {len(xs)} columns, over the budget of 480")
    print(f"{path}: {len(cells)} cells, {cell_sum} pages, {len(xs)} columns")
    return root, cells


def texts(root):
    for element in root.iter():
        if element.tag in (SVG + "text", SVG + "title", SVG + "tspan") and element.text:
            yield element.text


def check_small(root, cells):
    """What tests/test-heatmap.c's build_small() added, cell by cell where it is known."""
    def cells_where(start, end=None):
        return sorted((float(t["t0"]), int(r.get("data-pages"))) for s, r, t in cells
                      if s == start and (end is None or int(t["to"], 16) == end))

    # the one-page mapping: one page every other interval
    got = cells_where(0x7fff00000000)
    if got != [(float(k), 1) for k in range(0, 12, 2)]:
        fail(f"the one-page mapping's cells are {got}")
    # the last page of the 4 GiB mapping, from interval 5 on, alone in its row
    got = cells_where(0x7f0000000000, 0x7f0100000000)
    if got != [(float(k), 1) for k in range(5, 12)]:
        fail(f"the 4 GiB mapping's last row has {got}")
    # 4 GiB are 2^20 pages: 1 GiB added in one call must be in the t=3 column
    in_three = sum(p for t0, p in cells_where(0x7f0000000000) if t0 == 3.0)
    if in_three != (1 << 18) + 1024:
        fail(f"the 4 GiB mapping's t=3 column holds {in_three} pages")

    # the mapping that grew while written: in interval k, 1 + 16 << k pages,
    # all in its first 16 << k pages (so in the rows drawn for them)
    grows = 0x7d0000000000
    for k in range(11):
        column = [(int(t["from"], 16), int(r.get("data-pages"))) for s, r, t in cells
                  if s == grows and float(t["t0"]) == k]
        if sum(p for _, p in column) != 1 + (16 << k):
            fail(f"the growing mapping holds {sum(p for _, p in column)} pages at t={k}")
        if any(start >= grows + (16 << k) * PAGE for start, _ in column):
            fail(f"the growing mapping has cells past its written pages at t={k}")

    # the title: cleaned (U+FFFD for the byte, '?' for the newline), whole in
    # <title>, cut in the middle where it is drawn
    title = ("./workload --name='<&>\"' $'\ufffd?'" + "".join(f" arg{i}" for i in range(1, 31))
             + " (pid 1234), uffd-async, every 1 s")
    if root.findtext(SVG + "title") != title:
        fail(f"the SVG's <title> is {root.findtext(SVG + 'title')!r}")
    shown = root.find(SVG + "text").text
    head, _, tail = shown.partition("\u2026")
    if not (tail and title.startswith(head) and title.endswith(tail) and len(shown) < len(title)):
        fail(f"the title drawn is {shown!r}")

    everything = list(texts(root))
    for name in ("/tmp/a <b> & \"c\" 'd'.dat", "/tmp/caf\u00e9-\ufffd\ufffd-?.bin"):
        if not any(name in text for text in everything):
            fail(f"no label or tooltip reads {name!r}")
    if not any(t.startswith("other: 1 mapping never written") for t in everything):
        fail("no band for the mapping never written")


def check_many(root, cells):
    """build_many(): epochs merged twice, and counts past 32 bits."""
    columns = sorted({(float(t["t0"]), float(t["t1"])) for _, _, t in cells})
    if not 240 <= len(columns) <= 480:
        fail(f"{len(columns)} columns for 1000 intervals")
    if any(abs((t1 - t0) - 0.4) > 1e-6 for t0, t1 in columns):
        fail("columns of other than 4 intervals of 0.1 s: " + repr(columns[:3]))
    huge = [(float(t["t0"]), int(r.get("data-pages"))) for s, r, t in cells if s == 0x600000000000]
    # 40 adds of 2^34 pages at t=50.0 (interval 500) and one page at 50.1, in one column
    if sorted(huge)[-1][1] < 40 << 34 >> 7 or sum(p for _, p in huge) != (40 << 34) + 1:
        fail(f"the 64 TiB mapping's cells are {sorted(huge)[-3:]}")
    if "each column: 4 consecutive intervals" not in set(texts(root)):
        fail("no note that a column is 4 intervals")


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    program, out = sys.argv[1], sys.argv[2]
    many = re.sub(r"(\.svg)?$", "-many.svg", out, count=1)
    run = subprocess.run([program, out, many], stdout=subprocess.PIPE, text=True)
    if run.returncode != 0:
        print(f"{program} exited with {run.returncode}", file=sys.stderr)
        return 1

    totals, per_mapping = {}, collections.defaultdict(dict)
    for line in run.stdout.splitlines():
        fields = line.split()
        if len(fields) == 2:
            totals[fields[0]] = int(fields[1])
        elif len(fields) == 3:
            per_mapping[fields[0]][int(fields[1], 16)] = int(fields[2])
        else:
            fail(f"unexpected output line {line!r}")
    if set(totals) != {out, many}:
        fail(f"expected totals for {out} and {many}, got {sorted(totals)}")
        return 1
    for path in (out, many):
        result = check_file(path, totals[path], per_mapping[path])
        if result and path == out:
            check_small(*result)
        if result and path == many:
            check_many(*result)
    if failures:
        print(f"{len(failures)} failed checks", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
