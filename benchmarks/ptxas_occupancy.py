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
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastconv._backends import _cuda_launch as L  # noqa: E402
from tests.test_kernel_compile import FILES, ptxas_report  # noqa: E402

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
    for fname in FILES:
        for name, r in sorted(ptxas_report(fname, arch).items()):
            kernel = name.split("<")[0].split(" ")[-1]
            targs = name.split("<", 1)[1].split(">")[0].split(",")
            tile = tuple(int(a) for a in targs[2:])
            bx, by, bz = L.block_shape(kernel, tile)
            threads = bx * by * bz
            if kernel == "depthwise_v1" or kernel.startswith(("max_pool2d_v2", "avg_pool2d_v2")):
                threads = L.BLOCK_1D  # sized per problem by the launcher, at most this
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
