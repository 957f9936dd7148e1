"""``diffst demo``: the end-to-end demo on the bundled MERFISH crop (``make demo``).

Examples
--------
``diffst demo`` (writes ``demo_out/report.md``), ``diffst demo --out /tmp/demo --fast``
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``diffst demo`` (no heavy imports here)."""
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument(
        "--fast", action="store_true",
        help="seconds-long smoke run (tiny preset, 2 steps): every file, meaningless numbers",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1)")


def run(args: argparse.Namespace) -> int:
    """Run :func:`diffst.evaluation.demo.run_demo` and print where the report is."""
    from diffst.evaluation.demo import run_demo

    result = run_demo(args.out, fast=args.fast, threads=args.threads)
    total = result.timings_s.get("total", float("nan"))
    print(f"diffst demo: report written to {result.report} ({total:.0f} s)")
    return 0
