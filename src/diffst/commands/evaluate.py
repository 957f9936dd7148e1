"""``diffst evaluate``: score a ``diffst predict`` output against measured truth and baselines.

Examples
--------
``diffst evaluate --pred out.h5ad --truth store/ --out eval/`` (the store's ``test`` split)
``diffst evaluate --pred out.h5ad --truth store/val --out eval/`` (a split folder)
``diffst evaluate --pred out.h5ad --truth raw_section/ --platform merfish --out eval/``
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``diffst evaluate`` (no heavy imports here)."""
    parser.add_argument("--pred", required=True, help="AnnData (.h5ad) written by diffst predict")
    parser.add_argument(
        "--truth", required=True,
        help="prepared store (its --split), a store split folder, or a raw section to bin",
    )  # fmt: skip
    parser.add_argument("--split", default="test", help="store split (default: test)")
    parser.add_argument(
        "--platform", default="auto", help="reader of a raw truth section (default: auto)"
    )
    parser.add_argument("--out", default="evaluate_out", help="report folder")
    parser.add_argument(
        "--patch", type=int, default=0,
        help="patch side (HR bins) to cut a raw truth section into (default: the model's)",
    )  # fmt: skip
    parser.add_argument("--genes", type=int, default=4, help="genes drawn in the gene-map figure")
    parser.add_argument("--no-figures", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    """Build the :class:`EvaluateConfig`, call :func:`diffst.api.evaluate`, print."""
    from diffst.api import evaluate
    from diffst.evaluation.config import EvaluateConfig

    cfg = EvaluateConfig(
        patch_bins=args.patch, figure_genes=args.genes, figures=not args.no_figures
    )
    report = evaluate(
        args.pred, args.truth, cfg, out_dir=args.out, split=args.split, platform=args.platform
    )
    print(report.summary().to_string(index=False))
    print(f"diffst evaluate: report written to {report.files['report']}")
    return 0
