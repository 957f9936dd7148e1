"""Controlled comparisons of model variants: same data, budget and seeds; scored on one LR grid.

Each variant is a list of ``section.key=value`` training overrides applied to a preset; each
(variant, seed) trains once and is scored — with the same code as ``diffst benchmark`` — on the
held-out region of one split (``val`` by default: choose on validation, report on test). The
regression twin (same encoders, MSE, no diffusion) can be trained under the same overrides.
Runs go to a process pool (one torch thread each). Every run appends one JSON line per method to
``<out>/runs.jsonl``; the summary (mean ± population sd, ddof 0, over seeds) is printed and
written to ``<out>/summary.md``.

Datasets: ``merfish4`` / ``merfish10`` — the bundled MERFISH crop as the demo prepares it, at
×4 (10 µm bins, 8-bin patches) or ×10 (4 µm bins, 20-bin patches); ``detail`` — the synthetic
image-detail section (``--size-um``, 25 genes, ×10 at 4 µm, 20-bin patches) as Vizgen files.

Usage::

    python benchmarks/bench_variants.py --data detail --out runs/v1 --steps 600 --seeds 0 1 2 \\
        --variant base= --variant hr_image=model.hr_image_channels=16 --regression
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("pcc", "detail_pcc", "detail_recovered", "mass_ratio", "coverage90",
           "coverage90_calibrated", "ssim", "rmse", "pcc_ceiling", "detail_ceiling")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, choices=["merfish4", "merfish10", "detail"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--variant", action="append", required=True, metavar="NAME=K=V,K=V",
                   help="a name and its comma-separated overrides (NAME= for none)")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--preset", default="small")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--samples", type=int, default=4, help="K per tile (posterior-mean draws)")
    p.add_argument("--regression", action="store_true", help="also the regression twin")
    p.add_argument(
        "--regression-for", action="append", default=[], metavar="NAME",
        help="train the regression twin only for these variants (default: every variant)",
    )  # fmt: skip
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size-um", type=float, default=480.0, help="detail: section side")
    p.add_argument(
        "--genes",
        type=int,
        default=None,
        help="panel size (default: merfish 10, detail 25; detail: genes simulated)",
    )
    p.add_argument(
        "--per-gene",
        action="store_true",
        help="also write every method's per-gene scores to <out>/genes.jsonl",
    )
    return p


def _prepare_config(data: str, genes: int | None) -> Any:
    from diffst.evaluation.demo import demo_configs
    from diffst.sections.config import PrepareConfig, SplitConfig, ViewConfig

    if data == "merfish4":
        base = demo_configs(False)[0]
        return base if genes is None else dataclasses.replace(base, genes=genes)
    if data == "merfish10":
        return PrepareConfig(
            genes=genes or 10, hr_um=4.0, factor=10, patch=20, stride=4,
            views=ViewConfig(tissue_px=64, cell_grid=8, tile_px=16),
            split=SplitConfig(block_um=90.0, layout="rows"),
        )  # fmt: skip
    return PrepareConfig(
        genes=genes or 25, hr_um=4.0, factor=10, patch=20, stride=4,
        views=ViewConfig(tissue_px=64, cell_grid=8, tile_px=16),
        split=SplitConfig(block_um=120.0, layout="rows"),
    )  # fmt: skip


def _sample(data: str, out: Path, size_um: float, genes: int | None) -> Any:
    if data.startswith("merfish"):
        from diffst.datasets import merfish_mini

        return merfish_mini()
    from diffst.io.merfish import read_merfish
    from diffst.synthetic import simulate_detail_section, write_merfish_outs

    folder = out / "vizgen_section"
    if not (folder / "detected_transcripts.csv").is_file():
        section = simulate_detail_section(
            width_um=size_um, height_um=size_um, n_genes=genes or 25, seed=0
        )
        write_merfish_outs(section, folder)
    return read_merfish(folder, image="both")


def _score(
    route: Any, region: Any, preds: list, store: Path, per_gene: list | None = None
) -> list[dict[str, Any]]:
    from diffst.evaluation.api import baseline_predictions
    from diffst.evaluation.benchmark import _section_context
    from diffst.evaluation.config import EvaluateConfig
    from diffst.evaluation.scoring import score_all

    ctx = _section_context(route, store, "val")
    region = region.with_context(ctx) if ctx is not None else region
    cfg = EvaluateConfig(figures=False)
    scores = score_all([*preds, *baseline_predictions(region, cfg)], region, cfg)
    if per_gene is not None:
        for s in scores:
            for gene, values in s.genes.iterrows():
                per_gene.append({"method": s.name, "gene": str(gene),
                                 **{m: float(values[m]) for m in ("pcc", "detail_pcc")
                                    if m in values}})  # fmt: skip
    return [
        {"method": s.name, **{m: float(np.nanmean(s.genes[m])) for m in METRICS if m in s.genes}}
        for s in scores
    ]


def run_one(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Train one (variant, seed), predict the split's region, score it; one row per method."""
    import torch

    torch.set_num_threads(1)
    from diffst.config import ConfigError
    from diffst.evaluation.api import load_store_split
    from diffst.evaluation.benchmark import (
        BenchmarkConfig,
        _predict_config,
        _train_regression,
    )
    from diffst.evaluation.benchmark_methods import TiledRoute
    from diffst.evaluation.calibration import conformal_calibration
    from diffst.evaluation.region import region_from_patches
    from diffst.evaluation.scoring import project_prediction
    from diffst.runs.config import resolve_run_config
    from diffst.training.loop import train

    out, store = Path(job["out"]), Path(job["store"])
    run_dir = out / "runs" / f"{job['variant']}_s{job['seed']}"
    overrides = [
        f"train.max_steps={job['steps']}", "train.val_every=0", "train.ckpt_every=100000",
        "train.device=cpu", f"train.seed={job['seed']}", *job["overrides"],
    ]  # fmt: skip
    try:
        run_config = resolve_run_config(job["preset"], None, overrides)
    except ConfigError as err:
        return [{"variant": job["variant"], "seed": job["seed"], "error": str(err)}]
    start = time.perf_counter()
    result = train(store, run_dir / "diffst", run_config, progress=False, overwrite=True)
    train_s = time.perf_counter() - start
    sample = _sample(job["data"], out, job["size_um"], job["genes"])
    bench = BenchmarkConfig(preset=job["preset"], n_samples=job["samples"])
    pcfg = _predict_config(bench)
    truth, _ = load_store_split(store, job["split"])
    region = region_from_patches(truth)
    shape = tuple(json.loads((store / "manifest.json").read_text())["geometry"]["shape_hr"])
    route = TiledRoute(sample, region, shape, pcfg)
    pred, sample_mean = route.diffusion(Path(result.checkpoint), "diffst", "", whole=True)
    raw = dataclasses.replace(pred, name="diffst_unprojected", samples=None)
    pred = project_prediction(pred, region)  # as `diffst predict` writes it by default
    if pred.q05 is not None and pred.std is not None:  # coverage calibrated on the same split
        cal = conformal_calibration(pred.q05, pred.q95, pred.std, region.hr, region.scored)
        pred = dataclasses.replace(pred, calibration=cal)
    preds = [pred, raw, sample_mean]
    if job["regression"]:
        reg_ckpt = _train_regression(run_config, store, run_dir, bench, _Quiet())
        reg = route.regression(reg_ckpt, store, "regression twin")
        raw_reg = dataclasses.replace(reg, name="regression_unprojected")
        preds += [project_prediction(reg, region), raw_reg]
    per_gene: list[dict[str, Any]] | None = [] if job.get("per_gene") else None
    rows = _score(route, region, preds, store, per_gene)
    for row in [*rows, *(per_gene or [])]:
        row.update(variant=job["variant"], seed=job["seed"], steps=job["steps"],
                   data=job["data"], split=job["split"], train_s=train_s)  # fmt: skip
    with open(out / "runs.jsonl", "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    if per_gene is not None:
        with open(out / "genes.jsonl", "a", encoding="utf-8") as fh:
            for row in per_gene:
                fh.write(json.dumps(row) + "\n")
    return rows


class _Quiet:
    """Stand-in for the benchmark's stage printer."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def run(self, key: str, label: str, fn: Any, *args: Any, **kw: Any) -> Any:
        return fn(*args, **kw)

    def bar(self, description: str, total: int) -> Any:
        from contextlib import nullcontext

        return nullcontext(lambda n=1: None)


def summary(rows: list[dict[str, Any]]) -> str:
    """Markdown: mean ± sd over seeds per (variant, method) for the main metrics."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if "error" in r:
            continue
        groups.setdefault((r["variant"], r["method"]), []).append(r)
    cols = ("pcc", "detail_pcc", "detail_recovered", "mass_ratio", "coverage90_calibrated")
    lines = ["| variant | method | seeds | " + " | ".join(cols) + " |",
             "|---|---|---:|" + "---:|" * len(cols)]  # fmt: skip
    for (variant, method), rs in sorted(groups.items()):
        cells = []
        for c in cols:
            v = np.array([r.get(c, np.nan) for r in rs], dtype=float)
            cells.append("–" if np.isnan(v).all() else f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}")
        lines.append(f"| {variant} | {method} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Prepare the store once, run every (variant, seed), print and write the summary."""
    args = _parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from diffst.preparation.api import prepare

    store = args.out / "store"
    if not (store / "manifest.json").is_file():
        prepare(_sample(args.data, args.out, args.size_um, args.genes), store,
                _prepare_config(args.data, args.genes))  # fmt: skip
    jobs = []
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        overrides = [x for x in rest.split(",") if x]
        for seed in args.seeds:
            jobs.append({
                "out": str(args.out), "store": str(store), "variant": name, "seed": seed,
                "overrides": overrides, "steps": args.steps, "preset": args.preset,
                "split": args.split, "samples": args.samples,
                "regression": args.regression
                and (not args.regression_for or name in args.regression_for),
                "data": args.data, "size_um": args.size_um, "genes": args.genes,
                "per_gene": args.per_gene,
            })  # fmt: skip
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        rows = [r for batch in pool.map(run_one, jobs) for r in batch]
    text = summary(rows)
    (args.out / "summary.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
