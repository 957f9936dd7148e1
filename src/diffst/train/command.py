"""``diffst train``: options → :class:`~diffst.train.config.RunConfig` → :func:`diffst.train.train`.

Examples
--------
``diffst train --store store/ --out run/ --preset small``
``diffst train --store store/ --out run/ --preset paper --set train.batch_size=8 --resume``
``torchrun --nproc_per_node 4 -m diffst train --store store/ --out run/ --preset paper``
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``diffst train`` (no heavy imports here)."""
    parser.add_argument("--store", required=True, help="patch store written by `diffst prepare`")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, logs, config)")
    parser.add_argument(
        "--preset", default="small", help="shipped preset: paper, small or tiny (default: small)"
    )
    parser.add_argument("--config", default=None, help="YAML file applied after the preset")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one value, e.g. --set train.lr=3e-4 (repeatable)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue from OUT/checkpoints/last.pt, or from the checkpoint given",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="shortcut for train.max_steps")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved configuration and exit"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Resolve the configuration and train (or print it with ``--dry-run``)."""
    import yaml

    from diffst.config import to_dict
    from diffst.train.config import resolve_run_config

    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    config = resolve_run_config(args.preset, args.config, overrides)
    if args.dry_run:
        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return 0
    from diffst.train.loop import TrainingDivergedError, format_validation, train

    try:
        result = train(
            args.store, args.out, config, resume=args.resume, progress=not args.no_progress
        )
    except TrainingDivergedError as err:
        print(f"diffst train: error: {err}", file=sys.stderr)
        return 3
    if os.environ.get("RANK", "0") == "0":
        val = ""
        if result.val_pcc is not None and result.val_pcc_bicubic is not None:
            val = "; " + format_validation({
                "val_pcc": result.val_pcc, "val_pcc_bicubic": result.val_pcc_bicubic,
                "val_pcc_posterior": result.val_pcc_posterior or float("nan"),
                "val_pcc_nearest": result.val_pcc_nearest or float("nan"),
            })  # fmt: skip
        print(
            f"trained to step {result.step}: loss {result.loss:.4f}, "
            f"{result.patches_per_s:.2f} patches/s{val}; checkpoint {result.checkpoint}"
        )
    return 0
