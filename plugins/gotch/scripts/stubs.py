#!/usr/bin/env python3
"""Stubs gotch's generated libtorch wrappers that do not compile against a libtorch.

gotch's torch_api_generated.cpp.h wraps every ATen operator of the libtorch it
was generated for (2.1.0). Older or newer libtorch releases lack some of them or
changed their signatures. This tool turns exactly those wrappers into stubs that
raise a C++ exception (reported through gotch's usual last-error channel), so
the rest of the C API compiles and links unchanged.

  stubs.py detect LOG GENERATED      print the wrappers a compiler log blames
  stubs.py apply GENERATED NAMES...  rewrite those wrappers in place

Every wrapper is a top-level definition starting in column 0 and ending with a
"}" line in column 0; that is the only structure relied on.
"""
import re
import sys

DEF = re.compile(r"^(?P<ret>[A-Za-z_][\w:]*\s*\*?)\s*(?P<name>at[a-z]?_\w+)\((?P<args>[^)]*)\)\s*\{\s*$")


def functions(lines):
    """Yields (name, return type, first line index, last line index)."""
    i = 0
    while i < len(lines):
        m = DEF.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].rstrip("\n") != "}":
            j += 1
        yield m.group("name"), m.group("ret").strip(), i, j
        i = j + 1


def detect(log_path, gen_path):
    base = gen_path.rsplit("/", 1)[-1]
    with open(gen_path) as f:
        lines = f.readlines()
    spans = list(functions(lines))
    names = set()
    # gcc heads each function's diagnostics with "FILE: In function 'ret name(args)':".
    infn = re.compile(re.escape(base) + r": In function .(?:[\w:]+\s*\**\s*)?(at[a-z]?_\w+)\(")
    # Errors and instantiation traces name a line of the file.
    at_line = re.compile(re.escape(base) + r":(\d+):\d+:\s+(?:error|required from)")
    with open(log_path, errors="replace") as f:
        for row in f:
            m = infn.search(row)
            if m:
                names.add(m.group(1))
                continue
            m = at_line.search(row)
            if m:
                ln = int(m.group(1)) - 1
                for name, _, a, b in spans:
                    if a <= ln <= b:
                        names.add(name)
                        break
    for n in sorted(names):
        print(n)


def stub_body(name, ret):
    msg = f"{name}: not available in the libtorch this libtch was built against"
    body = f'  PROTECT(throw std::runtime_error("{msg}");)\n'
    if ret != "void":
        body += "  return 0;\n"  # 0 converts to int64_t, double, bool and pointer returns
    return body


def apply(gen_path, names):
    want = set(names)
    with open(gen_path) as f:
        lines = f.readlines()
    out, last, done = [], 0, set()
    for name, ret, a, b in functions(lines):
        if name not in want:
            continue
        out.extend(lines[last : a + 1])
        out.append(stub_body(name, ret))
        out.append(lines[b])
        last = b + 1
        done.add(name)
    out.extend(lines[last:])
    missing = want - done
    if missing:
        sys.exit(f"stubs.py: {gen_path} has no wrapper named {', '.join(sorted(missing))}")
    with open(gen_path, "w") as f:
        f.writelines(out)


def main(argv):
    if len(argv) >= 3 and argv[0] == "detect":
        detect(argv[1], argv[2])
    elif len(argv) >= 2 and argv[0] == "apply":
        apply(argv[1], argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
