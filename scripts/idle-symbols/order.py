"""Name the functions of a binary that a callgrind dump saw run.

usage: order.py DUMP LINKER_MAP BINARY_NAME OUT

DUMP is a callgrind output file of a stripped binary (functions of the
binary appear as addresses), LINKER_MAP the LLD map (`-Map`, with
`--no-demangle`) of that same binary. Writes one mangled symbol per line,
in address order, for LLD's `--symbol-ordering-file`.
"""

import bisect
import re
import sys


def map_symbols(path):
    """(address, size, name) of every symbol line of an LLD map."""
    out = []
    with open(path) as f:
        for line in f:
            cols = line.split()
            # VMA LMA Size Align Symbol: a symbol line has no section or file.
            if len(cols) != 5 or cols[4].startswith((".", "<")) or ":(" in cols[4]:
                continue
            try:
                out.append((int(cols[0], 16), int(cols[2], 16), cols[4]))
            except ValueError:
                continue
    out.sort()
    return out


def ran(path, binary):
    """Addresses and names of the functions of `binary` in a callgrind dump."""
    names, obj, addrs, named = {}, None, set(), set()
    pattern = re.compile(r"^(c?ob|c?fn)=\((\d+)\)(?: (.*))?$")
    with open(path) as f:
        for line in f:
            m = pattern.match(line.strip())
            if not m:
                continue
            key, ident, name = m.groups()
            kind = key.lstrip("c")
            if name:
                names[(kind, ident)] = name
            name = names.get((kind, ident))
            if key == "ob":
                obj = name
            if key == "fn" and name and obj and obj.endswith("/" + binary):
                if name.startswith("0x"):
                    addrs.add(int(name.split("'")[0], 16))
                else:
                    named.add(name)
    return addrs, named


def main():
    dump, linker_map, binary, out = sys.argv[1:5]
    syms = map_symbols(linker_map)
    starts = [s[0] for s in syms]
    addrs, named = ran(dump, binary)

    def at(addr):
        j = bisect.bisect_right(starts, addr) - 1
        if j >= 0 and syms[j][0] <= addr < syms[j][0] + max(syms[j][1], 1):
            return syms[j]
        return None

    # callgrind may show addresses relative to a load base: take the base
    # under which most addresses fall on a symbol's first byte.
    def exact(base):
        return sum(1 for a in addrs if (s := at(a - base)) and s[0] == a - base)

    base = max((0x0, 0x108000, 0x400000), key=exact)
    chosen = {}
    for a in addrs:
        if s := at(a - base):
            chosen[s[2]] = s
    by_name = {s[2]: s for s in syms}
    for name in named:
        if name in by_name:
            chosen[name] = by_name[name]
    funcs = sorted(chosen.values())
    with open(out, "w") as f:
        f.writelines(name + "\n" for _, _, name in funcs)
    size = sum(s for _, s, _ in funcs)
    print(
        f"{len(funcs)} functions, {size} bytes of code "
        f"({len(addrs)} addresses, {len(named)} named, base {base:#x})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
