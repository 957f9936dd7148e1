"""Spot-array checkpoints below the spot pitch on a synthetic Visium section (labelled synthetic).

One synthetic H&E section (:func:`diffst.synthetic.simulate_visium_pair`: cell types mixed cell by
cell, the image showing each cell's type) gives a training region and, beyond a gap, a Visium
region whose image is restained. The training region is written as Visium files too, and its
measured spots are the training data of the spot-array route (``prepare --hr spots``, 2×2 spots
pooled into one LR cell). Per seed the ``--preset`` network is trained for ``--steps`` steps, then
``diffst predict`` splits every spot of the Visium region into 2×2 sub-spots (the learned relation
applied one scale below the training data) and :func:`diffst.evaluation.subspots.score_subspots`
scores it, nearest and cubic interpolation against the region's molecules on the sub-spot grid:
total PCC, detail PCC (deviations from the spot's mean) and the split-half noise ceilings.

Writes ``<out>/subspots.jsonl`` (one row per seed and method), prints a Markdown table (mean ±
sd over seeds) and, with ``--figure``, draws the first seed's prediction
(:func:`diffst.evaluation.subspots.subspot_figure`).

Usage::

    python benchmarks/bench_subspots.py --out runs/subspots --seeds 0 1 2 --steps 600
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--preset", default="small")
    p.add_argument("--factor", type=int, default=2, help="spots per LR cell side (k)")
    p.add_argument("--train-width-um", type=float, default=3000.0)
    p.add_argument("--visium-width-um", type=float, default=1500.0)
    p.add_argument("--height-um", type=float, default=3000.0)
    p.add_argument("--um-per-px", type=float, default=1.0)
    p.add_argument("--stain", default="reinhard", choices=["none", "reinhard"])
    p.add_argument("--samples", type=int, default=4, help="K samples per tile")
    p.add_argument("--sampling-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    p.add_argument(
        "--figure",
        type=Path,
        default=None,
        help="PNG of the first seed's prediction beside spots, cubic and the truth",
    )
    return p


def _data(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(training spots, Visium spots, Visium truth), written once under ``<out>/data``."""
    from diffst.io.visium import read_visium
    from diffst.synthetic import simulate_visium_pair, write_spaceranger_outs

    root = args.out / "data"
    pair = simulate_visium_pair(
        root / "visium" / "outs", train_width_um=args.train_width_um,
        visium_width_um=args.visium_width_um, height_um=args.height_um,
        um_per_px=args.um_per_px, seed=args.data_seed,
    )  # fmt: skip
    train_dir = write_spaceranger_outs(pair.train, root / "train_visium" / "outs")
    return read_visium(train_dir), read_visium(pair.visium_dir), pair.truth


def run_seed(
    args: argparse.Namespace, seed: int, train_spots: Any, section: Any, truth: Any
) -> list[dict[str, Any]]:
    from diffst.evaluation.subspots import score_subspots, subspot_figure
    from diffst.inference.api import predict
    from diffst.inference.config import PredictConfig
    from diffst.preparation.spots.api import prepare_spots
    from diffst.runs.config import resolve_run_config
    from diffst.sections.config import PrepareConfig, SplitConfig, SpotHRConfig, ViewConfig
    from diffst.training.loop import train

    here = args.out / f"s{seed}"
    views = ViewConfig(tissue_px=64, cell_grid=4, tile_px=32, stain=args.stain)
    cfg = PrepareConfig(
        genes=len(train_spots.spots.genes) - int(np.sum(train_spots.spots.control)),
        hr="spots", views=views,
        spots=SpotHRConfig(factor=args.factor, patch=4 * args.factor, stride=args.factor,
                           split_block=8 * args.factor),
        split=SplitConfig(fractions=(0.9, 0.1, 0.0), seed=seed),
    )  # fmt: skip
    store = prepare_spots(train_spots, here / "store", cfg, overwrite=True).path
    t0 = time.perf_counter()
    overrides = [f"train.max_steps={args.steps}", f"train.seed={seed}", "train.device=cpu",
                 "train.val_every=0", *args.overrides]  # fmt: skip
    run = train(store, here / "run", resolve_run_config(args.preset, None, overrides),
                progress=False, overwrite=True)  # fmt: skip
    t_train = time.perf_counter() - t0
    pcfg = PredictConfig(steps=args.sampling_steps, n_samples=args.samples, seed=seed,
                         device="cpu", n_figure_genes=0)  # fmt: skip
    t0 = time.perf_counter()
    adata = predict(run.checkpoint, section, here / "pred.h5ad", pcfg, overwrite=True)
    t_pred = time.perf_counter() - t0
    assert adata is not None
    scores = score_subspots(adata, section, truth)
    if args.figure is not None and seed == args.seeds[0]:
        print(f"figure: {subspot_figure(scores, args.figure)}")
    consistency = adata.uns["diffst"]["spot_consistency"]
    rows = []
    for method, values in scores.summary().items():
        rows.append({
            "seed": seed, "method": method, "pcc": values["pcc"],
            "detail_pcc": values["detail_pcc"], "factor": args.factor, "steps": args.steps,
            "preset": args.preset, "stain": args.stain, "n_subspots": scores.n_subspots,
            "train_s": t_train, "predict_s": t_pred,
            "raw_spot_pcc": float(consistency["mean_pcc"]),
            "raw_total_ratio": float(consistency["total_ratio"]),
        })  # fmt: skip
    return rows


def main() -> None:
    args = _parser().parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    train_spots, section, truth = _data(args)
    rows: list[dict[str, Any]] = []
    with open(args.out / "subspots.jsonl", "a", encoding="utf-8") as log:
        for seed in args.seeds:
            for row in run_seed(args, seed, train_spots, section, truth):
                log.write(json.dumps(row) + "\n")
                log.flush()
                rows.append(row)
    print(f"\n{len(section.spots.ids)} Visium spots → {rows[0]['n_subspots']} sub-spots "
          f"(k = {args.factor}), {args.preset} preset, {args.steps} steps, stain {args.stain}, "
          f"seeds {args.seeds}\n")  # fmt: skip
    print("| method | total PCC | detail PCC |")
    print("|---|---|---|")
    for method in ("diffst", "cubic", "nearest", "ceiling"):
        sel = [r for r in rows if r["method"] == method]
        pcc = np.array([r["pcc"] for r in sel])
        det = np.array([r["detail_pcc"] for r in sel])
        print(f"| {method} | {pcc.mean():.3f} ± {pcc.std(ddof=1) if len(sel) > 1 else 0:.3f} | "
              f"{det.mean():.3f} ± {det.std(ddof=1) if len(sel) > 1 else 0:.3f} |")  # fmt: skip
    diff = [r for r in rows if r["method"] == "diffst"]
    print(f"\nraw spot consistency PCC {np.mean([r['raw_spot_pcc'] for r in diff]):.3f}, "
          f"raw total ratio {np.mean([r['raw_total_ratio'] for r in diff]):.3f}; "
          f"train {np.mean([r['train_s'] for r in diff]):.0f} s, "
          f"predict {np.mean([r['predict_s'] for r in diff]):.0f} s per seed")  # fmt: skip


if __name__ == "__main__":
    main()
