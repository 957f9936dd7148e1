"""Accuracy against training steps for diffusion and its regression twin (one curve per model).

Trains the diffusion model (checkpoints every ``--every`` steps) and the same-encoder regression
network (snapshots at the same steps) once per seed under the same overrides, then scores every
checkpoint on the held-out region of one split, on one LR grid, with the code of
``diffst benchmark``. A gap that closes with steps is budget; one that stays is design.
Writes ``<out>/budget.jsonl`` and prints a Markdown table (mean ± sd over seeds per step).

Usage::

    python benchmarks/bench_budget.py --data detail --out runs/budget --steps 2400 --every 300 \\
        --seeds 0 1 2 --set diffusion.simple_loss=mse ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_variants import _prepare_config, _sample, _score

METHODS = ("diffst", "regression", "diffst_unprojected", "regression_unprojected")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, choices=["merfish4", "merfish10", "detail"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--every", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--preset", default="small")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size-um", type=float, default=480.0)
    p.add_argument("--genes", type=int, default=25)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    return p


def run_seed(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Train both models for one seed, score every checkpoint; one row per (step, method)."""
    import torch

    torch.set_num_threads(1)
    from diffst.evaluation.api import load_store_split
    from diffst.evaluation.benchmark import BenchmarkConfig, _predict_config
    from diffst.evaluation.benchmark_methods import TiledRoute
    from diffst.evaluation.region import region_from_patches
    from diffst.evaluation.regression import RegressionConfig, train_regression
    from diffst.evaluation.scoring import project_prediction
    from diffst.runs.config import resolve_run_config
    from diffst.training.loop import train

    out, store, seed, every = Path(job["out"]), Path(job["store"]), job["seed"], job["every"]
    run_dir = out / "runs" / f"s{seed}"
    overrides = [
        f"train.max_steps={job['steps']}", "train.val_every=0", f"train.ckpt_every={every}",
        "train.keep_last=1000", "train.device=cpu", f"train.seed={seed}", *job["overrides"],
    ]  # fmt: skip
    rc = resolve_run_config(job["preset"], None, overrides)
    train(store, run_dir / "diffst", rc, progress=False, overwrite=True)
    reg_cfg = RegressionConfig(
        steps=job["steps"], batch_size=rc.train.batch_size, lr=rc.train.lr, seed=seed,
        snapshot_every=every,
    )  # fmt: skip
    reg_final = train_regression(store, run_dir / "regression.pt", rc, reg_cfg)
    sample = _sample(job["data"], out, job["size_um"], job["genes"])
    pcfg = _predict_config(BenchmarkConfig(preset=job["preset"], n_samples=job["samples"]))
    truth, _ = load_store_split(store, job["split"])
    region = region_from_patches(truth)
    shape = tuple(json.loads((store / "manifest.json").read_text())["geometry"]["shape_hr"])
    rows: list[dict[str, Any]] = []
    for step in range(every, job["steps"] + 1, every):
        ckpt = run_dir / "diffst" / "checkpoints" / f"step_{step:07d}.pt"
        snap = reg_final if step == job["steps"] else reg_final.with_suffix(f".step{step}.pt")
        route = TiledRoute(sample, region, shape, pcfg)
        pred, _ = route.diffusion(ckpt, "diffst", "")  # the held-out tiles only
        reg = route.regression(snap, store, "regression twin")
        preds = [  # as `diffst predict` writes them (projected onto the LR totals) and raw
            project_prediction(pred, region),
            dataclasses.replace(pred, name="diffst_unprojected", samples=None),
            project_prediction(reg, region),
            dataclasses.replace(reg, name="regression_unprojected"),
        ]
        for row in _score(route, region, preds, store):
            if row["method"] in METHODS:
                rows.append({**row, "step": step, "seed": seed})
    with open(out / "budget.jsonl", "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return rows


def table(rows: list[dict[str, Any]], suffix: str = "") -> str:
    """Markdown: steps × (diffusion, regression) total and detail PCC, mean ± sd over seeds;
    ``suffix="_unprojected"`` for the raw estimates."""
    steps = sorted({r["step"] for r in rows})
    lines = [
        "| steps | diffst PCC | regression PCC | diffst detail PCC | regression detail PCC |",
        "|---:|---:|---:|---:|---:|",
    ]
    for s in steps:
        cells = []
        for metric in ("pcc", "detail_pcc"):
            for method in (f"diffst{suffix}", f"regression{suffix}"):
                v = np.array([r[metric] for r in rows if r["step"] == s and r["method"] == method])
                cells.append(f"{v.mean():.3f} ± {v.std():.3f}" if v.size else "–")
        lines.append(f"| {s} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from diffst.preparation.api import prepare

    store = args.out / "store"
    if not (store / "manifest.json").is_file():
        prepare(_sample(args.data, args.out, args.size_um, args.genes), store,
                _prepare_config(args.data, args.genes))  # fmt: skip
    jobs = [
        {"out": str(args.out), "store": str(store), "seed": s, "steps": args.steps,
         "every": args.every, "overrides": args.overrides, "preset": args.preset,
         "split": args.split, "samples": args.samples, "data": args.data,
         "size_um": args.size_um, "genes": args.genes}
        for s in args.seeds
    ]  # fmt: skip
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        rows = [r for batch in pool.map(run_seed, jobs) for r in batch]
    text = (
        "Projected onto the LR totals (as `diffst predict` writes them):\n\n" + table(rows)
        + "\n\nRaw estimates:\n\n" + table(rows, "_unprojected")
    )  # fmt: skip
    (args.out / "budget.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
