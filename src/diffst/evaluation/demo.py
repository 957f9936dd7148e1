"""``diffst demo`` / ``make demo``: the whole pipeline on the bundled MERFISH crop.

Prepare (10 µm HR bins, 40 µm LR cells, 8×8-bin patches, full-width row-stripe splits) → train the
``small`` preset and its regression twin (two processes at once) → sample the held-out stripe with
uncertainty and run ``diffst predict`` on the whole section → score against nearest, bicubic and
the regression network → ``report.md``. Ablations (histology only, no gene graph, …) are
``diffst benchmark --ablation`` material: each is one more training, beyond the demo's budget.
Sized for 2 CPU cores and a few minutes; ``fast=True`` is a seconds-long smoke run (``tiny``
preset, a few steps) that writes every file of the report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from diffst.evaluation.benchmark import (
    AblationSwitch,
    BenchmarkConfig,
    BenchmarkResult,
    run_benchmark,
)
from diffst.evaluation.config import EvaluateConfig

__all__ = ["demo_configs", "run_demo"]

#: HR bin side, µm: the crop holds ~0.36 transcripts/µm², so 10 µm bins keep ≥ 1 count per bin
DEMO_HR_UM = 10.0
#: HR bins per LR cell side: 40 µm LR cells (a pseudo-spot a little smaller than Visium's pitch)
DEMO_FACTOR = 4
#: patch side in HR bins (80 µm) and stride (overlapping patches multiply training windows)
DEMO_PATCH, DEMO_STRIDE = 8, 2
#: spatial split: full-width row stripes of ≥ 90 µm (5 stripes: 3 train, 1 val, 1 test). The crop's
#: tissue changes from left (Gfap-rich) to right (Slc17a7-rich); square blocks put one tissue in
#: training and the other in val/test (mean Slc17a7 counts per bin 0.11 train vs 7.34 test), while
#: stripes across that gradient give every split both tissues (BENCHMARKS.md, "demo")
DEMO_BLOCK_UM = 90.0
DEMO_SPLIT_LAYOUT: Literal["rows"] = "rows"
#: genes of the demo panel (top by total count) and of the fast variant
DEMO_GENES, FAST_GENES = 10, 4
#: training steps of each learned method in the demo (four trainings share the time budget)
DEMO_STEPS = 800
#: torch threads: the demo's 16×16-bin patches are too small to gain from intra-op threads, and on
#: a 2-core machine a second thread mostly waits (measured: 300 steps in 43 s with 1 thread vs
#: 209 s with 2 threads on a shared 2-core machine); the second core keeps the rest responsive
DEMO_THREADS = 1
#: trainings at once, one process and one torch thread each: the demo's trainings are independent,
#: so on 2 cores two at a time halve the training wall time
DEMO_TRAIN_WORKERS = 2
#: ablations in the demo: none. Each is one more training of about 200 s on a 2-core AMD EPYC
#: (800 steps of `small`), and the demo has to finish within 5 minutes there (BENCHMARKS.md)
DEMO_ABLATIONS: tuple[AblationSwitch, ...] = ()


def demo_configs(fast: bool) -> tuple[object, BenchmarkConfig]:
    """The demo's prepare and benchmark configurations (``fast``: seconds-long variant)."""
    from diffst.sections.config import PrepareConfig, SplitConfig, ViewConfig

    prepare_cfg = PrepareConfig(
        genes=FAST_GENES if fast else DEMO_GENES,
        hr_um=DEMO_HR_UM,
        factor=DEMO_FACTOR,
        patch=DEMO_PATCH,
        stride=DEMO_STRIDE * (4 if fast else 1),
        views=ViewConfig(tissue_px=32, cell_grid=4, tile_px=16),
        split=SplitConfig(block_um=DEMO_BLOCK_UM, layout=DEMO_SPLIT_LAYOUT),
    )
    common = ("train.val_every=0", "train.ckpt_every=100000", "train.device=cpu")
    if fast:
        bench = BenchmarkConfig(
            preset="tiny",
            overrides=(*common, "train.max_steps=2", "train.batch_size=2"),
            histology_only=False,
            n_samples=2,
            train_workers=DEMO_TRAIN_WORKERS,
            sampler="ddim",
            steps=2,
            evaluate=EvaluateConfig(figure_genes=2),
        )
    else:
        bench = BenchmarkConfig(
            preset="small",
            overrides=(*common, f"train.max_steps={DEMO_STEPS}"),
            histology_only=False,
            ablations=DEMO_ABLATIONS,
            n_samples=8,
            train_workers=DEMO_TRAIN_WORKERS,
            evaluate=EvaluateConfig(figure_genes=4),
        )
    return prepare_cfg, bench


def run_demo(
    out_dir: str | os.PathLike[str] = "demo_out", *, fast: bool = False, threads: int | None = None
) -> BenchmarkResult:
    """Run the end-to-end demo and write ``<out_dir>/report.md`` with figures and tables.

    Parameters
    ----------
    out_dir
        Output folder (store, runs, ``prediction.h5ad``, ``report.md``, ``metrics.csv``,
        ``per_gene.csv``, ``figures/``).
    fast
        Seconds-long variant (``tiny`` preset, 2 steps, 4 genes): checks that every stage runs
        and every report file is written; its numbers mean nothing.
    threads
        CPU threads used by torch (default :data:`DEMO_THREADS`).

    Returns
    -------
    :class:`~diffst.evaluation.benchmark.BenchmarkResult` (report path, scores, timings).
    """
    import torch
    from rich.console import Console

    from diffst.datasets import merfish_mini

    torch.set_num_threads(threads or DEMO_THREADS)
    console = Console()
    prepare_cfg, bench = demo_configs(fast)
    console.rule("diffst demo" + (" (fast)" if fast else ""))
    sample = merfish_mini()
    title = "diffst demo: Vizgen MERFISH mouse-brain crop" + (" (fast smoke run)" if fast else "")
    context = [
        f"Data: bundled GiottoData Vizgen MERFISH mini region ({sample.name}); HR bins "
        f"{DEMO_HR_UM:g} µm, LR cells {DEMO_HR_UM * DEMO_FACTOR:g} µm (factor {DEMO_FACTOR}), "
        f"patches {DEMO_PATCH}×{DEMO_PATCH} bins.",
    ]
    if fast:
        context.append("**Fast smoke run: a few training steps; the numbers below mean nothing.**")
    return run_benchmark(
        sample, Path(out_dir), prepare_cfg, bench, title=title, context=context, console=console
    )
