"""Registers, shared memory and theoretical occupancy of every kernel instantiation, from ``ptxas -v``.

    python benchmarks/ptxas_occupancy.py [--arch sm_90] [--markdown out.md]

No GPU needed (nvcc on PATH). Occupancy is the CUDA occupancy calculator's arithmetic with the H100's
per-SM limits (sm_90: 64K registers allocated per warp in units of 256, 228 KiB shared memory of which
1 KiB per block is reserved, 2048 threads, 32 blocks) and the launcher's block size for each instantiation;
the measured counterpart (achieved occupancy, FLOP/s) needs ncu on a GPU.
"""
from __future__ import annotations

import argparse
import datetime
import os

from fastconv import _cuda
from fastconv._cuda.offline import ptxas_report, threads_of

SM90 = dict(regs=65536, reg_unit=256, smem=228 * 1024, smem_reserved=1024, threads=2048, blocks=32, warp=32)


def occupancy(regs: int, smem: int, threads: int, lim=SM90) -> tuple:
    """(resident blocks per SM, resident warps per SM, the limiting resource)."""
    warps = -(-threads // lim["warp"])
    regs_per_warp = -(-regs * lim["warp"] // lim["reg_unit"]) * lim["reg_unit"]
    by = {"registers": (lim["regs"] // regs_per_warp) // warps if regs else lim["blocks"],
          "shared memory": lim["smem"] // (smem + lim["smem_reserved"]),
          "threads": lim["threads"] // (warps * lim["warp"]),
          "blocks": lim["blocks"]}
    limit = min(by, key=by.get)
    return by[limit], by[limit] * warps, limit


def rows(arch: str):
    out = []
    for fname in sorted(_cuda.files()):
        for name, r in sorted(ptxas_report(fname, arch).items()):
            threads = threads_of(name)   # the family's block (the largest a plan launches it with)
            blocks, warps, limit = occupancy(r["regs"], r["smem"], threads)
            out.append(dict(kernel=name.split("(")[0].replace("void ", ""), regs=r["regs"], smem=r["smem"],
                            spills=r["spill_stores"] + r["spill_loads"], threads=threads, blocks=blocks,
                            occupancy=warps / 64, limit=limit))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    lines = [f"### ptxas -v, {args.arch}, {datetime.date.today().isoformat()} (nvcc {os.popen('nvcc --version').read().split('release ')[-1].split(',')[0]})",
             "", "Static shared memory only (dynamic shared memory is added per launch: direct v2, depthwise). "
             "Theoretical occupancy = resident warps / 64 with the H100's limits; threads per block from the launcher "
             "(the per-problem block size of depthwise and pool v2 at its 256 maximum).", "",
             "| kernel | regs | static smem (B) | spill (B) | threads | blocks/SM | occupancy | limited by |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows(args.arch):
        lines.append(f"| `{r['kernel']}` | {r['regs']} | {r['smem']} | {r['spills']} | {r['threads']} | "
                     f"{r['blocks']} | {r['occupancy']:.0%} | {r['limit']} |")
    text = "\n".join(lines) + "\n"
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
