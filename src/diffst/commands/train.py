"""``diffst train``: options → :class:`~diffst.runs.config.RunConfig` →
:func:`diffst.training.train`.

Examples
--------
``diffst train --store store/ --out run/ --preset small``
``diffst train --store store/ --out run/ --resume`` (the run's own configuration)
``diffst train --store store/ --out run/ --resume --max-steps 4000`` (train it longer)
``torchrun --nproc_per_node 4 -m diffst train --store store/ --out run/ --preset paper``
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``diffst train`` (no heavy imports here)."""
    parser.add_argument("--store", required=True, help="patch store written by `diffst prepare`")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, logs, config)")
    parser.add_argument(
        "--preset",
        default=None,
        help="shipped preset: paper, small or tiny (default: small; with --resume: the run's "
        "own configuration)",
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
        help="continue the run from OUT/checkpoints/last.pt (or the checkpoint given) with its "
        "own configuration; flags may change only the run length, logging, validation, "
        "checkpointing and device",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in a run folder that holds an earlier run (its files are replaced)",
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
    from diffst.training.checkpoint import training_run_config

    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    config = training_run_config(args.out, args.preset, args.config, overrides, args.resume)
    if args.dry_run:
        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return 0
    from diffst.training.loop import TrainingDivergedError, format_validation, train

    try:
        result = train(
            args.store, args.out, config, resume=args.resume, overwrite=args.overwrite,
            progress=not args.no_progress,
        )  # fmt: skip
    except TrainingDivergedError as err:
        print(f"diffst train: error: {err}", file=sys.stderr)
        return 3
    if os.environ.get("RANK", "0") != "0":
        return 0
    if result.step == result.start_step:
        print(
            f"{args.out}: already trained to step {result.step} (train.max_steps); nothing to "
            f"do; give a larger --max-steps to train on. Checkpoint: {result.checkpoint}"
        )
        return 0
    print(_summary(result, format_validation))
    return 0


def _summary(result: Any, format_validation: Any) -> str:
    """What the run did and where its files are (rank 0)."""
    val = ""
    if result.val_pcc is not None and result.val_pcc_bicubic is not None:
        val = "; " + format_validation({
            "val_pcc": result.val_pcc, "val_pcc_bicubic": result.val_pcc_bicubic,
            "val_pcc_posterior": result.val_pcc_posterior or float("nan"),
            "val_pcc_nearest": result.val_pcc_nearest or float("nan"),
        })  # fmt: skip
    out = result.out_dir
    return (
        f"trained to step {result.step}: loss {result.loss:.4f}, "
        f"{result.patches_per_s:.2f} patches/s{val}\n"
        f"  checkpoint:  {result.checkpoint}\n"
        f"  config:      {out / 'config.yaml'}\n"
        f"  log:         {out / 'log.csv'}\n"
        f"  tensorboard: {out / 'tensorboard'} (tensorboard --logdir {out / 'tensorboard'})"
    )
