"""Scaling in genes: prepare, one training step and whole-section prediction at N genes.

For each N a synthetic section (labelled synthetic; ``diffst.synthetic.simulate_tissue`` with N
genes) is prepared, trained for a few steps with the ``small`` preset and predicted whole; each
stage runs in a fresh process so that its peak RSS is its own. Rows: prepare seconds and peak
RSS, store size, training step seconds (median after the first) and peak RSS, predict seconds
per mm² and peak RSS, and ``diffst evaluate`` of that prediction against the store's test split
(seconds, peak RSS, mean PCC over the N genes). Prints one JSON line per N and a Markdown table.

Usage::

    python benchmarks/bench_genes.py --genes 25 100 500 2000 --out runs/genes
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--genes", type=int, nargs="+", default=[25, 100, 500, 2000])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size-um", type=float, default=800.0, help="section side, µm")
    p.add_argument("--steps", type=int, default=6, help="training steps (first one untimed)")
    p.add_argument("--samples", type=int, default=2, help="predict: K per tile")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--stage", choices=["prepare", "train", "predict", "evaluate"], help=argparse.SUPPRESS
    )
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    return p


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _sample(n: int, size_um: float):
    from diffst.synthetic import simulate_tissue

    return simulate_tissue(
        width_um=size_um, height_um=size_um, n_genes=n, um_per_px=2.0, seed=0,
        counts_per_cell=max(60.0, 0.5 * n),
    )  # fmt: skip


def _stage(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    n, root = args.n, args.out / f"n{args.n}"
    store, run = root / "store", root / "run"
    if args.stage == "prepare":
        from diffst.api import prepare
        from diffst.sections.config import PrepareConfig, SplitConfig, ViewConfig

        sample = _sample(n, args.size_um)
        cfg = PrepareConfig(
            genes=n, hr_um=10.0, factor=4, patch=16, stride=16,
            views=ViewConfig(tissue_px=32, cell_grid=4, tile_px=16),
            split=SplitConfig(block_um=160.0, layout="rows"),
        )  # fmt: skip
        t0 = time.perf_counter()
        prepare(sample, store, cfg, overwrite=True)
        size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        return {"prepare_s": time.perf_counter() - t0, "prepare_rss_gib": _peak_gib(),
                "store_mib": size / 2**20}  # fmt: skip
    if args.stage == "train":
        import csv

        from diffst.api import train

        train(store, run, "small", [f"train.max_steps={args.steps}", "train.val_every=0",
              "train.device=cpu", "train.log_every=1", "train.batch_size=8"],
              overwrite=True, progress=False)  # fmt: skip
        with open(run / "log.csv", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        times = sorted(8.0 / float(r["patches_per_s"]) for r in rows[1:] if r["patches_per_s"])
        return {"step_s": times[len(times) // 2] if times else float("nan"),
                "train_rss_gib": _peak_gib()}  # fmt: skip
    if args.stage == "evaluate":
        from diffst.api import evaluate

        t0 = time.perf_counter()
        report = evaluate(root / "pred.h5ad", store, out_dir=root / "eval")
        seconds = time.perf_counter() - t0
        return {"evaluate_s": seconds, "evaluate_rss_gib": _peak_gib(),
                "evaluate_mean_pcc": _mean_pcc(report)}  # fmt: skip
    from diffst.api import predict

    sample = _sample(n, args.size_um)
    t0 = time.perf_counter()
    adata = predict(run, sample, root / "pred.h5ad", overwrite=True, device="cpu",
                    n_samples=args.samples, steps=5, n_figure_genes=0)  # fmt: skip
    seconds = time.perf_counter() - t0
    assert adata is not None
    mm2 = (args.size_um / 1000.0) ** 2
    return {"predict_s_per_mm2": seconds / mm2, "predict_rss_gib": _peak_gib(),
            "predicted_bins": adata.n_obs}  # fmt: skip


def _mean_pcc(report: object) -> dict[str, float]:
    """Mean over genes of each scored method's PCC (``EvaluationReport.scores``)."""
    out = {}
    for name, scores in getattr(report, "scores", {}).items():
        genes = getattr(scores, "genes", None)
        if genes is not None and "pcc" in genes:
            out[name] = float(genes["pcc"].mean())
    return out


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.stage is not None:
        print(json.dumps(_stage(args)), flush=True)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.genes:
        row: dict = {"genes": n}
        for stage in ("prepare", "train", "predict", "evaluate"):
            cmd = [sys.executable, __file__, "--out", str(args.out), "--stage", stage, "--n",
                   str(n), "--size-um", str(args.size_um), "--steps", str(args.steps),
                   "--samples", str(args.samples), "--threads", str(args.threads)]  # fmt: skip
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            row.update(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(
        "| genes | prepare s | prepare GiB | store MiB | train step s (batch 8) | train GiB "
        "| predict s/mm² | predict GiB | evaluate s | evaluate GiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['genes']} | {r['prepare_s']:.1f} | {r['prepare_rss_gib']:.2f} | "
            f"{r['store_mib']:.0f} | {r['step_s']:.2f} | {r['train_rss_gib']:.2f} | "
            f"{r['predict_s_per_mm2']:.1f} | {r['predict_rss_gib']:.2f} | "
            f"{r['evaluate_s']:.1f} | {r['evaluate_rss_gib']:.2f} |"
        )


if __name__ == "__main__":
    main()
