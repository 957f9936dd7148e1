"""``diffst`` command line: ``diffst <command> [options]``.

Each command lives in ``diffst/commands/<command>.py`` with two functions:

* ``add_arguments(parser: argparse.ArgumentParser) -> None`` — declares options; must not
  import heavy modules (torch, anndata) at module level;
* ``run(args: argparse.Namespace) -> int`` — builds the stage config and calls one documented
  Python function (the same one notebook users call).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from diffst._version import __version__

#: command name → (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("diffst.commands.prepare", "build paired HR/LR training patches from a sample"),
    "train": ("diffst.commands.train", "train the Diff-ST model on a prepared store"),
    "predict": ("diffst.commands.predict", "super-resolve a section to AnnData with uncertainty"),
    "evaluate": (
        "diffst.commands.evaluate",
        "score predictions against ground truth and baselines",
    ),
    "benchmark": ("diffst.commands.benchmark", "prepare → train → predict → evaluate"),
    "demo": ("diffst.commands.demo", "end-to-end demo on the bundled MERFISH crop"),
}


def build_parser() -> argparse.ArgumentParser:
    """Parser with one sub-parser per available command."""
    parser = argparse.ArgumentParser(
        prog="diffst",
        description="Super-resolve spatial transcriptomics with histology (Diff-ST).",
    )
    parser.add_argument("--version", action="version", version=f"diffst {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffst`` console script. Returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from diffst.allocator import tune_allocator
    from diffst.config import ConfigError
    from diffst.geometry import GeometryError
    from diffst.io.sample import InputError

    tune_allocator()
    try:
        with _log_to_stderr():
            return int(args._module.run(args) or 0)
    except (InputError, GeometryError, ConfigError) as err:
        print(f"diffst {args.command}: error: {err}", file=sys.stderr)
        return 2


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """One line per diffst log message on the current ``sys.stderr``."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


@contextmanager
def _log_to_stderr() -> Iterator[None]:
    """Show diffst's log messages (notes, warnings) on stderr while a command runs."""
    logger = logging.getLogger("diffst")
    handler, level = _StderrHandler(), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
