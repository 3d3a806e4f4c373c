#!/usr/bin/env python3
"""The library's layering (libdirty/README.md), checked over the sources.

    check-layers.py SOURCE_DIR

Each layer may call the functions of its own layer and of the layers below
it, never above; the folders are the layers:

    libdirty/base/      1  knows no backend and no tracker API
    libdirty/backends/  2  one file per backend, and the table of them
    libdirty/core/      3  the tracker: the public API over the backends
    libdirty/around/    4  images, the writer, NUMA: on the public API

and no backend is named outside libdirty/backends/ (the table, and each
backend's own file): the core picks backends through the table only.  A
function's layer is the folder of the file that defines it; calls are found
by name in the code with comments and strings taken out.  Exit 0 when the
tree keeps the rules, 1 (with each breach printed) when not.
"""
import os
import re
import sys

LAYERS = {"base": 1, "backends": 2, "core": 3, "around": 4}
BACKEND_NAMES = ("uffd-async", "uffd-sync", "soft-dirty", "mprotect", "mapping")
BACKEND_SYMBOLS = re.compile(r"\bdirty_backend_(uffd_async|uffd_sync|soft_dirty|mprotect|mapping)\b")
DEFINITION = re.compile(r"^(?!static\b)(?:[A-Za-z_][\w \t\*]*?[\s\*])?(dirty_\w+|\w+)\s*\(([^;]*?)\)\s*\{",
                        re.M | re.S)
CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")


def strip(code, keep_strings=False):
    """The code without comments (and without string literals unless keep_strings)."""
    out, i, n = [], 0, len(code)
    while i < n:
        c = code[i]
        if code.startswith("/*", i):
            j = code.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * code.count("\n", i, j))
            i = j
        elif code.startswith("//", i):
            j = code.find("\n", i)
            i = n if j < 0 else j
        elif c in "\"'":
            j = i + 1
            while j < n and code[j] != c:
                j += 2 if code[j] == "\\" else 1
            out.append(code[i:j + 1] if keep_strings else c + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def main():
    src = os.path.join(sys.argv[1] if len(sys.argv) > 1 else ".", "libdirty")
    files = {}
    for layer in LAYERS:
        d = os.path.join(src, layer)
        if not os.path.isdir(d):
            print(f"check-layers: {d} is missing: the library is not laid out in layers")
            return 1
        for name in sorted(os.listdir(d)):
            if name.endswith(".c"):
                files[os.path.join(layer, name)] = open(os.path.join(d, name)).read()
    loose = [n for n in os.listdir(src) if n.endswith(".c")]
    problems = [f"libdirty/{n}: a source file outside the layers' folders" for n in sorted(loose)]
    defined = {}
    for path, code in files.items():
        for m in DEFINITION.finditer(strip(code)):
            if not m.group(1).startswith("__") and not m.group(0).lstrip().startswith(("if", "for", "while", "switch", "return")):
                defined.setdefault(m.group(1), path)
    for path, code in files.items():
        layer = LAYERS[path.split("/")[0]]
        bare = strip(code)
        for m in CALL.finditer(bare):
            callee = defined.get(m.group(1))
            if callee and callee != path and LAYERS[callee.split("/")[0]] > layer:
                line = bare.count("\n", 0, m.start()) + 1
                problems.append(f"libdirty/{path}:{line}: calls {m.group(1)}() of libdirty/{callee}, a higher layer")
        if path.startswith("backends/"):
            continue
        with_strings = strip(code, keep_strings=True)
        for m in BACKEND_SYMBOLS.finditer(with_strings):
            line = with_strings.count("\n", 0, m.start()) + 1
            problems.append(f"libdirty/{path}:{line}: names the backend {m.group(0)} outside libdirty/backends/")
        for m in re.finditer(r'"([^"\\]*)"', with_strings):
            if m.group(1) in BACKEND_NAMES:
                line = with_strings.count("\n", 0, m.start()) + 1
                problems.append(f"libdirty/{path}:{line}: names the backend \"{m.group(1)}\" outside libdirty/backends/")
    for p in sorted(set(problems)):
        print(p)
    print(f"check-layers: {len(files)} files, {len(set(problems))} breaches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
