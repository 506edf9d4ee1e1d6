#!/usr/bin/env python3
"""Instructions executed per machine instruction of one function, from valgrind's callgrind,
joined to objdump's disassembly (standard library only; needs valgrind and binutils).

Instruction counts are exact and repeatable where timings on these VMs are not (no hardware
counters here), so two builds of the kernels can be compared instruction by instruction:

    GN_MATRIX_BUDGET_MS=0 GN_MATRIX_FILTER=$'flex\\tF32\\t8x2048x7x7\\tnchw\\tNone' \\
        valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file=cg.out KERNEL_MATRIX
    callgrind_annotate cg.out | head -30            # totals per function
    python3 tools/callgrind_asm.py cg.out KERNEL_MATRIX 'run_vectorized::imp$' [MIN_COUNT]

FUNCTION is a regular expression on callgrind's function names (the macerator kernels appear
as `V3::run_vectorized::imp`, one per dispatch signature). Prints the function's total, then
every instruction executed at least MIN_COUNT times (default 1) with its count: a loop's body
shares one count, so the counts show each loop and how often it ran.
"""
import collections
import re
import subprocess
import sys


def costs(path, want):
    """Self cost (Ir) per instruction address of the functions matching `want`."""
    names, cost = {}, collections.Counter()
    current, last, positions, after_call = "", 0, ["line"], False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("positions:"):
                positions = line.split()[1:]
                continue
            m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line)
            if m:
                kind, idx, name = m.groups()
                if name:
                    names[idx] = name
                if kind == "fn":
                    current = names.get(idx, "")
                continue
            if line.startswith("calls="):
                after_call = True  # the next cost line is the call's inclusive cost
                continue
            if not line or line[0] not in "0123456789+-*":
                continue
            parts = line.split()
            p = parts[0]
            if p.startswith("+"):
                addr = last + int(p[1:], 0)
            elif p.startswith("-"):
                addr = last - int(p[1:], 0)
            elif p == "*":
                addr = last
            else:
                addr = int(p, 0)
            last = addr
            values = parts[len(positions):]
            if after_call:
                after_call = False
                continue
            if values and re.search(want, current):
                cost[addr] += int(values[0])
    return cost


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    path, binary, want = sys.argv[1:4]
    least = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    cost = costs(path, want)
    if not cost:
        sys.exit(f"no instruction of a function matching {want!r} in {path}")
    print(f"total {sum(cost.values()):,} instructions in {want}, {len(cost)} addresses")
    lo, hi = min(cost), max(cost) + 16
    dis = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", f"--start-address={lo}",
         f"--stop-address={hi}", binary],
        capture_output=True, text=True, check=True).stdout
    for line in dis.splitlines():
        m = re.match(r"^\s*([0-9a-f]+):\s*(.*)$", line)
        if m and cost.get(int(m.group(1), 16), 0) >= least:
            print(f"{cost[int(m.group(1), 16)]:>14,}  {m.group(1)}  {m.group(2)}")


if __name__ == "__main__":
    main()
