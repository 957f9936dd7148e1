"""Prediction memory against section size: whole-section (``--stream off``) vs streamed.

One ``small`` checkpoint of N genes is trained for a few steps on an 800 µm synthetic section
(labelled synthetic; :mod:`bench_genes`'s prepare and train stages), then synthetic sections of
growing side are predicted whole, each size and mode in a fresh process: peak RSS of the
process during ``predict`` (the peak is reset once the synthetic section is built, through
``/proc/self/clear_refs``, so the generator's own transient peak does not count), RSS before
``predict`` (the section's molecules and image, which a real reader streams from disk instead),
the difference (what prediction itself adds), seconds per mm² of section and the h5ad size.
Whole-section prediction grows with bins × genes; a streamed one should stay flat.

Usage::

    python benchmarks/bench_sections.py --genes 2000 --sizes 800 1600 2400 --modes off on \\
        --out runs/sections
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--sizes", type=float, nargs="+", default=[800.0, 1600.0, 2400.0])
    p.add_argument("--modes", nargs="+", default=["off", "on"], choices=["off", "on"])
    p.add_argument("--block-gib", type=float, default=0.5)
    p.add_argument("--samples", type=int, default=2, help="K per tile")
    p.add_argument("--sample-steps", type=int, default=5, help="DDIM steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    return p


def _status_gib(field: str) -> float:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in GiB."""
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _reset_peak() -> None:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0)."""
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as fh:
        fh.write("5")


def _child(args: argparse.Namespace) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    import bench_genes
    from diffst.api import predict

    torch.set_num_threads(args.threads)
    size, mode = float(args.child[0]), args.child[1]
    sample = bench_genes._sample(args.genes, size)
    generation_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    _reset_peak()
    before = _status_gib("VmRSS")
    out = args.out / f"pred_{int(size)}_{mode}.h5ad"
    t0 = time.perf_counter()
    adata = predict(
        args.out / f"n{args.genes}" / "run", sample, out, overwrite=True, device="cpu",
        n_samples=args.samples, steps=args.sample_steps, sampler="ddim", n_figure_genes=0,
        stream=mode, block_gib=args.block_gib,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    assert adata is not None
    peak = _status_gib("VmHWM")
    streamed = adata.uns["diffst"].get("streamed") or {}
    return {
        "size_um": size, "mode": mode, "genes": args.genes, "bins": int(adata.n_obs),
        "section_mm2": (size / 1000.0) ** 2, "predict_s": seconds,
        "s_per_mm2": seconds / (size / 1000.0) ** 2, "rss_before_gib": before,
        "peak_gib": peak, "predict_gib": peak - before, "h5ad_gib": out.stat().st_size / 2**30,
        "generation_peak_gib": generation_peak,
        "blocks": streamed.get("blocks", 1), "rerun_share": streamed.get("rerun_share", 0.0),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(args)), flush=True)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    run = args.out / f"n{args.genes}" / "run"
    if not (run / "last.pt").is_file():
        for stage in ("prepare", "train"):
            subprocess.run(
                [sys.executable, str(HERE / "bench_genes.py"), "--out", str(args.out), "--stage",
                 stage, "--n", str(args.genes), "--threads", str(args.threads)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
    rows = []
    for size in args.sizes:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--out", str(args.out), "--genes", str(args.genes),
                   "--block-gib", str(args.block_gib), "--samples", str(args.samples),
                   "--sample-steps", str(args.sample_steps), "--threads", str(args.threads),
                   "--child", str(size), mode]  # fmt: skip
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
            (args.out / f"pred_{int(size)}_{mode}.h5ad").unlink(missing_ok=True)
    print(
        "| section side µm | mm² | HR bins | mode | blocks | tile re-runs | s per mm² "
        "| RSS before predict GiB | peak RSS GiB | predict's own GiB | h5ad GiB |"
    )
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['size_um']:.0f} | {r['section_mm2']:.2f} | {r['bins']} | {r['mode']} | "
            f"{r['blocks']} | {r['rerun_share']:.0%} | {r['s_per_mm2']:.1f} | "
            f"{r['rss_before_gib']:.2f} | {r['peak_gib']:.2f} | {r['predict_gib']:.2f} | "
            f"{r['h5ad_gib']:.2f} |"
        )


if __name__ == "__main__":
    main()
