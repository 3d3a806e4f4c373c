#!/usr/bin/env python3
"""An exported function is declared in the header and has a page that renders.

    check-api-docs.py --header HEADER --man-dir DIR --symbol NAME [--remove PAGE]
    check-api-docs.py --man-dir DIR --all-pages

For NAME (a name of libdirty.sym; meson makes one test per name):
  - HEADER declares it: a prototype "... NAME(...);" outside comments;
  - DIR/NAME.3 exists, as the page or as a one-line ".so man3/PAGE.3" that
    names an existing page; that page lists NAME in its NAME section and
    shows it in its SYNOPSIS;
  - the page renders without a warning: groff -ww -man -t -z, and
    "man --warnings 3 NAME" on a copy of DIR laid out as man3/ and man7/
    (what "man 3 NAME" does once the pages are installed), whose output must
    show NAME.
--all-pages renders every page of DIR (libdirty(7) too) the same way.
--remove PAGE checks a copy of DIR without PAGE: the test that shows this
check fails when a page is missing.
Exit 0 when everything holds, 1 with each breach printed.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile


def strip_comments(code):
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", code, flags=re.S)


def declared(header, name):
    """The prototype of name in header, or None."""
    code = strip_comments(open(header).read())
    # a return type, the name, a parameter list, and the semicolon
    m = re.search(r"(^|[;}\n])([^;{}#]*?[\w\*\s])\b" + re.escape(name) + r"\s*\(([^;{}]*)\)\s*;",
                  code, re.S)
    return " ".join((m.group(2) + name + "(" + m.group(3) + ");").split()) if m else None


def page_text(path):
    return open(path, encoding="utf-8").read()


def so_target(text):
    """The page a ".so man3/x.3" page points at, or None."""
    m = re.fullmatch(r"\.so\s+(man\d/\S+)\s*", text)
    return m.group(1) if m else None


def sections(text):
    """{section name: its lines}, from .SH lines."""
    out, current = {}, None
    for line in text.splitlines():
        m = re.match(r'\.SH\s+"?([^"]*)"?\s*$', line)
        if m:
            current = m.group(1).strip()
            out[current] = []
        elif current:
            out[current].append(line)
    return out


def plain(roff):
    """roff source with requests' font words joined and escapes dropped."""
    text = re.sub(r"\\f[BIRP]|\\f\(..|\\\(..|\\&", "", roff)
    text = text.replace("\\-", "-").replace("\\e", "\\")
    out = []
    for line in text.splitlines():
        m = re.match(r"\.(B|I|BI|IB|BR|RB|IR|RI)\s+(.*)$", line)
        if m:
            # .B and .I take their words as they are; the others alternate
            # fonts and join their words without spaces
            words = [a or b for a, b in re.findall(r'"([^"]*)"|(\S+)', m.group(2))]
            line = (" " if m.group(1) in ("B", "I") else "").join(words)
        out.append(line)
    return "\n".join(out)


def render_groff(path):
    """groff's warnings for the page (empty when it renders cleanly)."""
    r = subprocess.run(["groff", "-ww", "-b", "-z", "-t", "-man", "-Tutf8", path],
                       capture_output=True, text=True, env=dict(os.environ, LC_ALL="C.UTF-8"))
    out = r.stderr.strip()
    if r.returncode:
        out += f"\ngroff exited with status {r.returncode}"
    return out.strip()


def man_tree(man_dir, remove=None):
    """A temporary man/ tree: man3/*.3 and man7/*.7 from man_dir."""
    tree = tempfile.mkdtemp(prefix="libdirty-man.")
    for f in sorted(os.listdir(man_dir)):
        m = re.match(r".*\.(\d)$", f)
        if not m or f == remove:
            continue
        os.makedirs(os.path.join(tree, "man" + m.group(1)), exist_ok=True)
        shutil.copy(os.path.join(man_dir, f), os.path.join(tree, "man" + m.group(1), f))
    return tree


def render_man(tree, section, name):
    """man --warnings SECTION NAME in tree: (problems, the page as text)."""
    env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80", MANPAGER="cat", PAGER="cat")
    env.pop("MANPATH", None)
    r = subprocess.run(["man", "--warnings", "-M", tree, section, name],
                       capture_output=True, text=True, env=env)
    problems = r.stderr.strip()
    if r.returncode:
        problems += f"\nman exited with status {r.returncode}"
    return problems.strip(), r.stdout


def check_symbol(args, problems):
    name, man_dir = args.symbol, args.man_dir
    decl = declared(args.header, name)
    if decl:
        print(f"{args.header}: {decl}")
    else:
        problems.append(f"{args.header} does not declare {name}()")

    tree = man_tree(man_dir, args.remove)
    try:
        path = os.path.join(tree, "man3", name + ".3")
        if not os.path.exists(path):
            problems.append(f"no page {name}.3 in {man_dir}" +
                            (f" (without {args.remove})" if args.remove else ""))
            return
        text = page_text(path)
        target = so_target(text)
        if target:
            path = os.path.join(tree, target)
            if not os.path.exists(path):
                problems.append(f"{name}.3 is '.so {target}', which does not exist")
                return
            text = page_text(path)
            if so_target(text):
                problems.append(f"{target} is itself a .so page")
                return
            print(f"{name}.3: .so {target}")
        secs = sections(text)
        listed = [n.strip() for n in plain("\n".join(secs.get("NAME", []))).split(" - ")[0].split(",")]
        if name not in listed:
            problems.append(f"{os.path.basename(path)}: its NAME section does not list {name} "
                            f"(it lists {', '.join(listed)})")
        synopsis = plain("\n".join(secs.get("SYNOPSIS", [])))
        if not re.search(r"\b" + re.escape(name) + r"\(", synopsis):
            problems.append(f"{os.path.basename(path)}: its SYNOPSIS does not show {name}()")
        warnings = render_groff(path)
        if warnings:
            problems.append(f"{os.path.basename(path)} does not render cleanly (groff -ww):\n"
                            + warnings)
        warnings, out = render_man(tree, "3", name)
        if warnings:
            problems.append(f"man 3 {name}: {warnings}")
        elif name not in out:
            problems.append(f"man 3 {name} does not show {name}")
        else:
            print(f"man 3 {name}: {len(out.splitlines())} lines, no warning")
    finally:
        shutil.rmtree(tree)


def check_all_pages(args, problems):
    tree = man_tree(args.man_dir)
    try:
        pages = 0
        for sub in sorted(os.listdir(tree)):
            for f in sorted(os.listdir(os.path.join(tree, sub))):
                path = os.path.join(tree, sub, f)
                if so_target(page_text(path)):
                    continue
                pages += 1
                warnings = render_groff(path)
                if warnings:
                    problems.append(f"{f} does not render cleanly (groff -ww):\n{warnings}")
                name, section = f.rsplit(".", 1)
                warnings, out = render_man(tree, section, name)
                if warnings:
                    problems.append(f"man {section} {name}: {warnings}")
        print(f"{pages} pages rendered")
        if not pages:
            problems.append(f"no pages in {args.man_dir}")
    finally:
        shutil.rmtree(tree)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--header")
    p.add_argument("--man-dir", required=True)
    p.add_argument("--symbol")
    p.add_argument("--remove")
    p.add_argument("--all-pages", action="store_true")
    args = p.parse_args()
    for tool in ("groff", "man"):
        if not shutil.which(tool):
            print(f"SKIP: {tool} is not installed (groff-base, man-db)")
            return 77
    problems = []
    if args.all_pages:
        check_all_pages(args, problems)
    elif args.symbol and args.header:
        check_symbol(args, problems)
    else:
        p.error("--symbol and --header, or --all-pages")
    for pr in problems:
        print(f"FAIL: {pr}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
