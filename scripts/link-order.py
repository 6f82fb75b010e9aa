"""What scripts/link-ordered runs for a link that names netbind's hot-function list.

netbind-handler and netbind-cni are started once per pod operation, so a setup's own code
comes into a cold process every time: each 64 KiB of it that the setup touches is a page
fault, and every page of it an iTLB entry. Their build scripts ask the linker to place the
functions a setup and a teardown run first and together (`--symbol-ordering-file`, naming
`link/hot-functions.txt`). That list holds the symbol names of the build it was made from,
and a Rust symbol's name ends in a hash of its crate's build metadata (features, profile,
versions) and, when LLVM promoted it, a `.llvm.N` suffix: another build command (the bench's,
whose dev-dependencies unify other features) or a dependency's update gives other names. So
this script resolves each name against the symbols defined in the
objects and rlibs of this very link (by its name without the hash where the exact one is
missing), writes the resolved list next to the output and hands that to the linker instead.

Then it runs the linker (`cc`) itself. If the resolution cannot be made (no `nm`, an argument
file), the link goes on without an order: the program is the same, only its layout differs.
`scripts/gen-link-order.sh` makes the list; `link/README.md` says why and how.
"""

import os
import re
import subprocess
import sys

FLAG = "-Wl,--symbol-ordering-file="
# `17h` + 16 hex digits + `E` ends a legacy-mangled Rust symbol; `.llvm.N` follows a symbol
# LLVM made global to share it between codegen units.
HASH = re.compile(r"17h[0-9a-f]{16}E(\.llvm\.\d+)?$")
LLVM_SUFFIX = re.compile(r"\.llvm\.\d+$")
# How many instances of a generic function a name of another build may stand for.
MAX_INSTANCES = 2


def key(symbol):
    """A symbol's name without what changes from build to build."""
    if symbol.startswith("_ZN"):
        return HASH.sub("E", symbol)
    return LLVM_SUFFIX.sub("", symbol)


def defined_text_symbols(inputs):
    """Every function symbol the link's own objects and rlibs define."""
    found = {}
    # Batches keep each nm command line short; an rlib's metadata member is not an object,
    # which nm says on stderr and skips.
    for start in range(0, len(inputs), 64):
        out = subprocess.run(
            ["nm", "--defined-only", "--format=posix", *inputs[start : start + 64]],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            check=False,
            text=True,
        ).stdout
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[1] in ("T", "t", "W", "w"):
                # A set: one function defined in several inputs (a weak instance of a
                # generic function) is one instance, not several.
                found.setdefault(key(fields[0]), set()).add(fields[0])
    return {name: sorted(symbols) for name, symbols in found.items()}


def resolve(wanted_path, args, out_path):
    """Writes the resolved list next to the output; returns its path."""
    with open(wanted_path, encoding="utf-8") as wanted_file:
        wanted = [
            line.strip()
            for line in wanted_file
            if line.strip() and not line.startswith("#")
        ]
    inputs = [a for a in args if a.endswith((".o", ".rlib")) and os.path.isfile(a)]
    defined = defined_text_symbols(inputs)
    exact = {symbol for symbols in defined.values() for symbol in symbols}
    resolved, seen = [], set()
    for name in wanted:
        if name in exact or not name.startswith("_ZN"):
            # This build's own name (a build with the list's features and versions), or a C
            # library's (glibc's `malloc`, linked through `-lc`, has no hash): as it is.
            symbols = [name]
        else:
            # Another build's name: the same function here, if its name without the hash
            # picks one out. A generic function's name stands for each of its instances;
            # where there are more than a few, which one the setup runs is unknown, and
            # placing all of them among the hot code would spread it out again.
            symbols = defined.get(key(name), [])
            if len(symbols) > MAX_INSTANCES:
                symbols = []
        for symbol in symbols:
            if symbol not in seen:
                seen.add(symbol)
                resolved.append(symbol)
    path = out_path + ".symbol-order"
    with open(path, "w", encoding="utf-8") as out:
        out.write("\n".join(resolved) + "\n")
    return path


def main():
    args = sys.argv[1:]
    linker = os.environ.get("NETBIND_LINKER", "cc")
    at = next((i for i, a in enumerate(args) if a.startswith(FLAG)), None)
    if at is not None:
        out_path = next(
            (args[i + 1] for i, a in enumerate(args[:-1]) if a == "-o"), None
        )
        try:
            if out_path is None or any(a.startswith("@") for a in args):
                raise ValueError("no -o, or an argument file")
            args[at] = FLAG + resolve(args[at][len(FLAG) :], args, out_path)
        except (OSError, ValueError) as err:
            print(f"link-ordered: linking without an order: {err}", file=sys.stderr)
            del args[at]
    os.execvp(linker, [linker, *args])


if __name__ == "__main__":
    main()
