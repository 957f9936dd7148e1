"""Options shared by several ``diffst`` commands (declared here once)."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffst.datasets import BUNDLED
from diffst.io.detect import READABLE_PLATFORMS

__all__ = ["add_input_arguments", "add_section_argument"]


def add_input_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--input`` (a path any reader accepts, or a bundled dataset), ``--platform`` and
    ``--section``; ``what`` names the input in the help."""
    parser.add_argument("--input", required=True, help=f"{what}, or one of {list(BUNDLED)}")
    parser.add_argument(
        "--platform",
        default="auto",
        choices=("auto", *READABLE_PLATFORMS),
        help="reader to use (default: auto, detected from the files)",
    )
    add_section_argument(parser)
    parser.add_argument(
        "--he-image", type=Path, default=None, metavar="FILE",
        help="Xenium: read this registered post-run H&E (e.g. he_image.ome.tif) as the image "
        "instead of the morphology mosaic; needs --he-alignment",
    )  # fmt: skip
    parser.add_argument(
        "--he-alignment", type=Path, default=None, metavar="CSV",
        help="Xenium: the H&E's 10x alignment CSV (3×3 matrix, H&E px → morphology px)",
    )  # fmt: skip


def add_section_argument(parser: argparse.ArgumentParser, *, repeat: bool = False) -> None:
    """``--section ID``: one section of a folder that holds several (legacy ST as published)."""
    parser.add_argument(
        "--section", action="append" if repeat else "store", default=[] if repeat else None,
        metavar="ID",
        help="section id in a folder of several sections (legacy ST: <id>.tsv.gz, "
        "<id>_selection.tsv, <id>/*.jpg)" + ("; repeat it for several sections" if repeat else ""),
    )  # fmt: skip
