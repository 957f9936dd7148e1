"""Synthetic Visium, transcript-trained route: train on molecules, predict real-format Visium.

One synthetic H&E section (:func:`diffst.synthetic.simulate_visium_pair`, labelled synthetic) gives
a transcript-resolved training region and a non-overlapping region written as a Space Ranger
``outs/`` folder (55 µm spots on the 100 µm hex lattice) whose image has another stain
(:class:`diffst.synthetic.StainShift`). Per ``views.stain`` setting the training region is
prepared with Visium-lattice pseudo-spots (``--lr visium``); per seed the model is trained, and
``diffst predict`` super-resolves the Visium folder as :func:`diffst.read_visium` reads it. The
prediction is scored on the region's known molecules, binned on the prediction's HR grid, with
``diffst.evaluate``'s code, beside nearest and bicubic upsampling computed from the same Visium
spots (rows ``*_spots``: the model's own input) and from the truth's complete LR cells
(``nearest`` / ``bicubic``: what ``diffst evaluate`` computes from a truth section, 100 µm squares
of all molecules — more than the 55 µm spots measure). The model trained without normalisation
also predicts the region under the *training* stain (``image = same``), the control.

Writes ``<out>/visium.jsonl`` (one row per seed, setting, image and method) and prints a Markdown
table (mean ± sd over seeds) that is also written to ``<out>/visium.md``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_visium.py --out runs/visium --steps 400 \\
        --seeds 0 1 2 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("pcc", "detail_pcc", "detail_recovered", "mass_ratio", "pcc_ceiling", "detail_ceiling")
SPOT_SUFFIX = "_spots"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument("--stains", nargs="+", default=["none", "reinhard"],
                   choices=["none", "reinhard"], help="views.stain settings")  # fmt: skip
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--preset", default="small")
    p.add_argument("--samples", type=int, default=8, help="K per tile")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--sampling-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--section-seed", type=int, default=0, help="seed of the synthetic section")
    p.add_argument("--train-um", type=float, default=1200.0, help="training region width")
    p.add_argument("--visium-um", type=float, default=800.0, help="Visium region width")
    p.add_argument("--height-um", type=float, default=1000.0)
    p.add_argument("--genes", type=int, default=25)
    p.add_argument("--hr-um", type=float, default=25.0, help="HR bin side (factor 4: 100 µm)")
    p.add_argument("--patch", type=int, default=16, help="patch side, HR bins")
    p.add_argument("--no-control", action="store_true", help="skip the same-stain control")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V",
                   help="training overrides")  # fmt: skip
    return p


def prepare_config(stain: str, hr_um: float, patch: int, genes: int, height_um: float) -> Any:
    """Visium-lattice pseudo-spots (``--lr visium``) on a 4× grid, one training block."""
    from diffst.sections.config import PrepareConfig, SplitConfig, ViewConfig

    return PrepareConfig(
        genes=genes, hr_um=hr_um, factor=4, lr="visium", patch=patch, stride=4,
        views=ViewConfig(tissue_px=64, cell_grid=patch, tile_px=16, stain=stain),  # type: ignore[arg-type]
        split=SplitConfig(block_um=height_um, fractions=(1.0, 0.0, 0.0), layout="rows"),
    )  # fmt: skip


def spot_context(checkpoint: str | Path, visium: Any, pred: Any) -> Any:
    """The Visium spots rasterised on the prediction's LR grid, as the model reads them.

    Returns an :class:`~diffst.evaluation.region.LRContext` (spot sums per LR cell, measured
    cells, spot area in HR bins as the units) for the interpolation baselines.
    """
    from diffst.evaluation.api import load_prediction
    from diffst.evaluation.region import LRContext
    from diffst.inference.setup import checkpoint_store_meta
    from diffst.sections.inputs import checkpoint_section_inputs

    meta = checkpoint_store_meta(checkpoint)
    inputs = checkpoint_section_inputs(visium, tuple(meta["genes"]), meta)
    grid = load_prediction(pred)
    geo = inputs.geometry
    if not np.allclose(geo.origin_um, grid.geometry["origin_um"]) or (
        tuple(geo.shape_hr) != tuple(grid.geometry["shape_hr"])
    ):
        raise RuntimeError(f"spot grid {geo} is not the prediction's {grid.geometry}")
    lr, mask = inputs.lr_section()
    units = np.full(mask.shape, np.pi * (inputs.spot_diameter_um / 2) ** 2 / geo.hr_um**2)
    return LRContext(np.asarray(lr, np.float32), np.asarray(mask, bool), units)


def score(pred: Any, truth: Any, context: Any) -> dict[str, dict[str, float]]:
    """``diffst evaluate``'s scores of the prediction and its baselines, plus the baselines
    from the Visium spots (``<name>_spots``); mean over genes per method and metric."""
    from diffst.evaluation.api import baseline_predictions, evaluate
    from diffst.evaluation.config import EvaluateConfig
    from diffst.evaluation.scoring import score_all

    cfg = EvaluateConfig(figures=False)
    report = evaluate(pred, truth, cfg, out_dir=None)
    region = report.region.with_context(context)
    spot_baselines = [
        dataclasses.replace(b, name=b.name + SPOT_SUFFIX, description=b.description + " (spots)")
        for b in baseline_predictions(region, cfg)
    ]
    scores = [*report.scores.values(), *score_all(spot_baselines, region, cfg)]
    out = {s.name: {m: float(np.nanmean(s.genes[m])) for m in METRICS} for s in scores}
    for row in out.values():
        row["n_bins"] = float(region.scored.sum())
        row["n_lr_cells"] = float(region.n_lr_cells())
    return out


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    import diffst
    from diffst.synthetic import simulate_visium_pair, write_spaceranger_outs

    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pair = simulate_visium_pair(
        args.out / "visium_restained", train_width_um=args.train_um,
        visium_width_um=args.visium_um, height_um=args.height_um, n_genes=args.genes,
        seed=args.section_seed,
    )  # fmt: skip
    images = {"restained": diffst.read_visium(pair.visium_dir)}
    if not args.no_control:
        images["same"] = diffst.read_visium(write_spaceranger_outs(pair.truth, args.out / "same"))
    print(f"section simulated and written in {time.perf_counter() - start:.1f} s")
    rows: list[dict[str, Any]] = []
    jsonl = args.out / "visium.jsonl"
    for stain in args.stains:
        cfg = prepare_config(stain, args.hr_um, args.patch, args.genes, args.height_um)
        store = diffst.prepare(pair.train, args.out / f"store_{stain}", cfg, overwrite=True)
        for seed in args.seeds:
            run_dir = args.out / "runs" / f"{stain}_s{seed}"
            overrides = [
                f"train.max_steps={args.steps}", "train.val_every=0", "train.device=cpu",
                f"train.ckpt_every={args.steps}", f"train.seed={seed}", *args.overrides,
            ]  # fmt: skip
            t0 = time.perf_counter()
            run = diffst.train(store.path, run_dir, args.preset, overrides, overwrite=True,
                               progress=False)  # fmt: skip
            train_s = time.perf_counter() - t0
            for image, visium in images.items():
                if image == "same" and stain != "none":
                    continue
                t0 = time.perf_counter()
                adata = diffst.predict(
                    run.checkpoint, visium, run_dir / f"pred_{image}.h5ad", overwrite=True,
                    sampler=args.sampler, steps=args.sampling_steps, n_samples=args.samples,
                    device="cpu", seed=seed,
                )  # fmt: skip
                predict_s = time.perf_counter() - t0
                scores = score(adata, pair.truth, spot_context(run.checkpoint, visium, adata))
                for method, metrics in scores.items():
                    row = {"stain": stain, "image": image, "seed": seed, "method": method,
                           **metrics, "steps": args.steps, "preset": args.preset,
                           "train_s": train_s, "predict_s": predict_s}  # fmt: skip
                    rows.append(row)
                    with open(jsonl, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(row) + "\n")
                d = scores["diffst"]
                print(f"{stain} s{seed} {image}: diffst PCC {d['pcc']:.3f} detail "
                      f"{d['detail_pcc']:.3f} (train {train_s:.0f} s, predict {predict_s:.0f} s)",
                      flush=True)  # fmt: skip
    text = table(rows)
    (args.out / "visium.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"total {time.perf_counter() - start:.0f} s")


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: mean ± sd over seeds per (views.stain, Visium image, method)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["stain"], r["image"], r["method"]), []).append(r)
    lines = [
        "| views.stain | Visium image | method | seeds | PCC | detail PCC | detail recovered "
        "| count ratio |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    order = ("diffst", "nearest_spots", "bicubic_spots", "nearest", "bicubic")
    for (stain, image, method), rs in sorted(
        groups.items(),
        key=lambda kv: (kv[0][0], kv[0][1] != "restained", order.index(kv[0][2])),
    ):
        cells = []
        for m in ("pcc", "detail_pcc", "detail_recovered", "mass_ratio"):
            v = np.array([r[m] for r in rs], dtype=np.float64)
            cells.append(f"{v.mean():.3f} ± {v.std():.3f}")
        seeds = len({r["seed"] for r in rs})
        lines.append(f"| {stain} | {image} | {method} | {seeds} | " + " | ".join(cells) + " |")
    ceil = [r for r in rows if r["method"] == "diffst"]
    if ceil:
        lines.append("")
        lines.append(
            f"Noise ceilings of the truth: total PCC {ceil[0]['pcc_ceiling']:.3f}, detail PCC "
            f"{ceil[0]['detail_ceiling']:.3f}; {int(ceil[0]['n_bins'])} scored bins in "
            f"{int(ceil[0]['n_lr_cells'])} LR cells."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
