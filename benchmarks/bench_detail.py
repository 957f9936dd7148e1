"""Benchmark on the synthetic image-detail section (labelled synthetic), read as Vizgen files.

:func:`diffst.synthetic.simulate_detail_section` is written in Vizgen's format
(:func:`diffst.synthetic.write_merfish_outs`), read back by ``read_merfish`` (DAPI + polyT) and
run through :func:`diffst.evaluation.benchmark.run_benchmark`: ×10 (4 µm HR bins, 40 µm LR cells),
25 genes, 20×20-bin patches, full-width row stripes for the split. Every method — nearest,
bicubic, the same-encoder regression network, diffst (and TESLA where installed) — is scored on
the held-out stripe from the section's one LR grid; the report (total and detail PCC, noise
ceilings, calibrated coverage) is written to ``--out``.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_detail.py --out runs/bench_detail \\
        [--size-um 800] [--steps 1500] [--seed 0] [--set model.xxx=...]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--size-um", type=float, default=800.0, help="section side, µm")
    p.add_argument("--genes", type=int, default=25)
    p.add_argument("--seed", type=int, default=0, help="simulation seed")
    p.add_argument("--train-seed", type=int, default=0, help="training seed (train.seed)")
    p.add_argument("--steps", type=int, default=1500, help="training steps of each method")
    p.add_argument("--preset", default="small")
    p.add_argument("--samples", type=int, default=8, help="K samples per tile")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--histology-only", action="store_true", help="also the histology-only model")
    p.add_argument("--ablation", action="append", default=[], help="switches to ablate")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="training override for every learned method (repeatable)",
    )  # fmt: skip
    return p


def prepare_config(genes: int) -> object:
    """×10 at 4 µm: 20-bin patches (2×2 LR cells), training stride 4, LR-grid test windows."""
    from diffst.sections.config import PrepareConfig, SplitConfig, ViewConfig

    return PrepareConfig(
        genes=genes,
        hr_um=4.0,
        factor=10,
        patch=20,
        stride=4,
        views=ViewConfig(tissue_px=64, cell_grid=8, tile_px=16),
        split=SplitConfig(block_um=120.0, layout="rows"),
    )


def main(argv: list[str] | None = None) -> Path:
    """Simulate, write, read, benchmark; print the report path and the headline rows as JSON."""
    import torch

    from diffst.evaluation.benchmark import BenchmarkConfig, run_benchmark
    from diffst.evaluation.config import EvaluateConfig
    from diffst.io.merfish import read_merfish
    from diffst.synthetic import simulate_detail_section, write_merfish_outs

    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    section = simulate_detail_section(
        width_um=args.size_um, height_um=args.size_um, n_genes=args.genes, seed=args.seed
    )
    folder = args.out / "vizgen_section"
    write_merfish_outs(section, folder)
    sample = read_merfish(folder, image="both")
    overrides = (
        f"train.max_steps={args.steps}", "train.val_every=0", "train.ckpt_every=100000",
        "train.device=cpu", f"train.seed={args.train_seed}", *args.overrides,
    )  # fmt: skip
    cfg = BenchmarkConfig(
        preset=args.preset, overrides=overrides, histology_only=args.histology_only,
        ablations=tuple(args.ablation), n_samples=args.samples,
        evaluate=EvaluateConfig(figure_genes=4),
    )  # fmt: skip
    command = " ".join(["python", "benchmarks/bench_detail.py", *(argv or sys.argv[1:])])
    context = [
        f"Data: synthetic image-detail section (diffst.synthetic.simulate_detail_section, seed "
        f"{args.seed}, {args.size_um:g} × {args.size_um:g} µm, {args.genes} genes) written as "
        "Vizgen files and read by read_merfish (DAPI + polyT); labelled synthetic.",
        f"Command: `{command}` on {platform.node()} ({args.threads} threads).",
    ]
    result = run_benchmark(
        sample, args.out, prepare_config(args.genes), cfg,
        title="diffst benchmark: synthetic image-detail section (×10, 4 µm bins)",
        context=context,
    )  # fmt: skip
    rows = {
        name: {
            m: float(s.genes[m].mean())
            for m in ("pcc", "detail_pcc", "detail_recovered", "mass_ratio", "coverage90",
                      "coverage90_calibrated")
            if m in s.genes
        }
        for name, s in result.scores.items()
        if s.unavailable is None
    }  # fmt: skip
    print(json.dumps({"report": str(result.report), "seconds": time.perf_counter() - start,
                      "rows": rows}))  # fmt: skip
    return result.report


if __name__ == "__main__":
    main()
