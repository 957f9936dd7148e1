"""``diffst benchmark``: prepare → train each method → predict → evaluate, one report.

Examples
--------
``diffst benchmark --sample section/ --out bench/ --preset small --hr-um 4 --factor 10``
``diffst benchmark --sample a/ --held-out b/ --out bench/ --ablation use_graph``
``diffst benchmark --sample a/ --sample b/ --held-out c/ --hr spots --out bench/``
``diffst benchmark --sample her2st/ --section A1 --section B1 --held-out-section C1 --hr spots``

The store is shaped by the same flags as ``diffst prepare`` (``--genes``, ``--hr-um``,
``--factor``, ``--lr``, ``--hr``, ``--patch``, ``--stride``, ``--seed``) and ``--prepare-set``.
"""

from __future__ import annotations

import argparse

from diffst.commands.options import add_section_argument
from diffst.commands.prepare import add_store_arguments

_ABLATIONS = ("use_graph", "use_cross_attention", "use_disentangle", "use_modulation")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``diffst benchmark`` (no heavy imports here)."""
    parser.add_argument(
        "--sample", required=True, action="append",
        help="training section: a path any reader accepts or a bundled dataset name; repeat it "
        "for several training sections (spot-array stores, with --held-out)",
    )  # fmt: skip
    parser.add_argument("--held-out", default=None, help="section evaluated as a whole")
    parser.add_argument("--platform", default="auto", help="reader (default: auto)")
    parser.add_argument("--out", required=True, help="output folder")
    add_section_argument(parser, repeat=True)
    parser.add_argument(
        "--held-out-section", default=None, metavar="ID",
        help="section id of the held-out section (in --held-out, else in the --sample folder)",
    )  # fmt: skip
    add_store_arguments(parser)
    parser.add_argument("--preset", default="small", help="training preset (default: small)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a training value, e.g. --set train.max_steps=200 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--prepare-set", dest="prepare_overrides", action="append", default=[],
        metavar="KEY=VALUE", help="override a prepare value, e.g. --prepare-set hr_um=8",
    )  # fmt: skip
    parser.add_argument(
        "--ablation",
        action="append",
        default=[],
        choices=_ABLATIONS,
        help="train the model with this switch off (repeatable)",
    )
    parser.add_argument("--no-regression", action="store_true", help="skip the regression net")
    parser.add_argument(
        "--no-histology-only", action="store_true", help="skip the histology-only model"
    )
    parser.add_argument("--samples", type=int, default=8, help="samples per patch (K)")
    parser.add_argument(
        "--no-section", action="store_true", help="skip whole-section `diffst predict`"
    )
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch CPU threads of each training process (default: torch's own choice)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Read the sections, build the configurations and call ``run_benchmark``."""
    import torch

    from diffst.commands.prepare import build_config
    from diffst.datasets import load_sample
    from diffst.evaluation.benchmark import BenchmarkConfig, run_benchmark

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    prepare_cfg = build_config(args, list(args.prepare_overrides))
    cfg = BenchmarkConfig(
        preset=args.preset, overrides=tuple(args.overrides), regression=not args.no_regression,
        histology_only=not args.no_histology_only, ablations=tuple(args.ablation),
        n_samples=args.samples, predict_section=not args.no_section,
    )  # fmt: skip
    sections = args.section or [None]
    samples = [
        load_sample(spec, platform=args.platform, section=sid)
        for spec in args.sample
        for sid in sections
    ]
    held_path = args.held_out or (args.sample[0] if args.held_out_section else None)
    held = (
        load_sample(held_path, platform=args.platform, section=args.held_out_section)
        if held_path
        else None
    )
    training = samples[0] if len(samples) == 1 else samples
    result = run_benchmark(training, args.out, prepare_cfg, cfg, held_out=held)
    print(f"diffst benchmark: report written to {result.report}")
    return 0
