#!/usr/bin/env python3
"""The library exports what libdirty.sym says, and nothing but dirty_ names.

    check-abi.py SYMFILE SHARED_LIB STATIC_LIB

- libdirty.sym: every name is a dirty_ name, listed once, and the first
  node hides everything else (local: *);
- the shared library's dynamic symbols are exactly the names of
  libdirty.sym, each with the version of the node that lists it
  (nm -D --with-symbol-versions);
- the static library defines no global symbol outside the dirty_ name
  space (nm -g --defined-only), so that linking it statically cannot clash
  with a program's own names (AddressSanitizer's marker of a global,
  __odr_asan.NAME, counts as NAME).
Prints each breach; exit 0 when there is none, 1 otherwise.
"""
import re
import subprocess
import sys


def read_nodes(path):
    """{node: [names]} in file order, and whether the first node has local: *."""
    text = re.sub(r"/\*.*?\*/", "", open(path).read(), flags=re.S)
    nodes, local_all = {}, False
    for m in re.finditer(r"([A-Za-z_][\w.]*)\s*\{(.*?)\}\s*([\w.]*)\s*;", text, re.S):
        node, body = m.group(1), m.group(2)
        names, section = [], "global"
        for word in re.findall(r"[\w*]+:|[^\s;]+(?=\s*;)", body):
            if word.endswith(":"):
                section = word[:-1]
            elif section == "global":
                names.append(word)
            elif section == "local" and word == "*" and not nodes:
                local_all = True
        nodes[node] = names
    return nodes, local_all


def nm(args):
    out = subprocess.run(["nm"] + args, check=True, capture_output=True, text=True).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    symfile, shared, static = sys.argv[1:]
    problems = []
    nodes, local_all = read_nodes(symfile)
    if not nodes:
        problems.append(f"{symfile}: no version node")
    if not local_all:
        problems.append(f"{symfile}: the first node does not hide the rest (local: *;)")
    version_of = {}
    for node, names in nodes.items():
        if not re.fullmatch(r"LIBDIRTY_\d+\.\d+", node):
            problems.append(f"{symfile}: node {node} is not named LIBDIRTY_MAJOR.MINOR")
        for name in names:
            if not name.startswith("dirty_"):
                problems.append(f"{symfile}: {name} (node {node}) is not a dirty_ name")
            if name in version_of:
                problems.append(f"{symfile}: {name} is listed in {version_of[name]} and {node}")
            version_of[name] = node
    print(f"{symfile}: {len(version_of)} names in {len(nodes)} node(s): {', '.join(nodes)}")

    # the shared library: name@@VERSION for each defined dynamic symbol;
    # type A entries are the version nodes themselves
    exported = {}
    for fields in nm(["-D", "--defined-only", "--with-symbol-versions", shared]):
        kind, sym = fields[-2], fields[-1]
        if kind == "A":
            continue
        name, _, version = sym.partition("@")
        exported[name] = version.lstrip("@")
    for name in sorted(set(exported) - set(version_of)):
        problems.append(f"{shared} exports {name}, which libdirty.sym does not list")
    for name in sorted(set(version_of) - set(exported)):
        problems.append(f"{shared} does not export {name} (libdirty.sym, {version_of[name]})")
    for name in sorted(set(exported) & set(version_of)):
        if exported[name] != version_of[name]:
            problems.append(f"{shared}: {name} has version '{exported[name]}', "
                            f"libdirty.sym says {version_of[name]}")
    print(f"{shared}: {len(exported)} symbols exported")

    # the static library: every global definition of every member
    defined = set()
    for fields in nm(["-g", "--defined-only", static]):
        if len(fields) >= 3:
            defined.add(fields[-1])
    # AddressSanitizer adds a marker per global, named after it
    # (__odr_asan.dirty_backends): the name space is still ours
    foreign = sorted(n for n in defined
                     if not re.sub(r"^__odr_asan(_gen_|\.)", "", n).startswith("dirty_"))
    for name in foreign:
        problems.append(f"{static} defines the global symbol {name}, outside the dirty_ names")
    print(f"{static}: {len(defined)} global symbols defined, {len(foreign)} outside dirty_")

    for p in problems:
        print(f"FAIL: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
