"""``diffst prepare``: options → :class:`PrepareConfig` → :func:`diffst.preparation.api.prepare`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from diffst.commands.options import add_input_arguments

__all__ = ["add_arguments", "add_store_arguments", "build_config", "run"]


#: command-line flag → PrepareConfig field (flags override --config and --set)
_FLAGS = {
    "genes": "genes",
    "gene_list": "gene_list",
    "gene_selection": "gene_selection",
    "hr_um": "hr_um",
    "factor": "factor",
    "lr": "lr",
    "hr": "hr",
    "patch": "patch",
    "stride": "stride",
    "seed": "seed",
}

#: fields of the transcript-binning mode that ``--hr spots`` does not use → their spots.* twin
_NOT_FOR_SPOTS = {
    "hr_um": None,
    "factor": "spots.factor",
    "lr": None,
    "patch": "spots.patch",
    "stride": "spots.stride",
    "spot_diameter_um": None,
    "spot_pitch_um": "spots.pitch_um",
}


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that shape a store (genes, grid, LR layer, HR source, patches, seed), shared by
    ``diffst prepare`` and ``diffst benchmark``; :func:`build_config` reads them."""
    genes = parser.add_mutually_exclusive_group()
    genes.add_argument("--genes", type=int, help="top-K genes by total count (default 25)")
    genes.add_argument("--gene-list", help="text file with one gene per line")
    parser.add_argument(
        "--gene-selection", choices=["counts", "spatial"],
        help="rank genes for --genes by total counts (default) or by spatial structure "
        "(Moran's I of the LR map, training blocks only)",
    )  # fmt: skip
    parser.add_argument("--hr-um", type=float, help="HR bin side in µm (default 4.25)")
    parser.add_argument("--factor", type=int, help="HR bins per LR cell side (default 10)")
    parser.add_argument("--lr", choices=["grid", "visium"], help="LR layer (default grid)")
    parser.add_argument(
        "--hr",
        choices=["transcripts", "spots"],
        help="HR map: binned transcripts (default) or the measured spot array (spots.* options)",
    )
    parser.add_argument("--patch", type=int, help="patch side in HR bins (default 256)")
    parser.add_argument("--stride", type=int, help="step between patches in HR bins")
    parser.add_argument("--seed", type=int, help="seed (also the split seed unless set)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``diffst prepare``."""
    add_input_arguments(parser, "sample folder/file")
    parser.add_argument("--out", required=True, help="store folder to write")
    parser.add_argument(
        "--image-channels",
        nargs="+",
        default=None,
        metavar="NAME",
        help="MERFISH mosaics to read: DAPI, polyT or both (default: DAPI for a folder, both "
        "for merfish_mini)",
    )
    add_store_arguments(parser)
    parser.add_argument("--config", help="YAML file with PrepareConfig fields")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. split.block_um=136 or views.tile_px=16 (repeatable)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and the patch plan only"
    )


def build_config(args: argparse.Namespace, overrides: list[str] | None = None) -> Any:
    """Resolve ``--config``, the overrides (default ``--set``) and the flags of
    :func:`add_store_arguments` into a :class:`PrepareConfig`."""
    from diffst.config import apply_overrides, from_dict, load_yaml
    from diffst.sections.config import PrepareConfig

    config = getattr(args, "config", None)
    data: dict[str, Any] = load_yaml(config) if config else {}
    data = apply_overrides(data, list(args.set if overrides is None else overrides))
    for flag, key in _FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            data[key] = value
    if args.seed is not None and "seed" not in data.get("split", {}):
        data.setdefault("split", {})["seed"] = args.seed
    if data.get("hr") == "spots":
        _refuse_transcript_fields(data, args)
    elif args.stride is None and args.patch is not None and "stride" not in data:
        data["stride"] = args.patch
    return from_dict(PrepareConfig, data)


def _refuse_transcript_fields(data: dict[str, Any], args: argparse.Namespace) -> None:
    """With ``hr: spots`` the spot array is the HR grid: binning fields would be ignored."""
    from diffst.config import ConfigError

    for key, twin in _NOT_FOR_SPOTS.items():
        if key not in data:
            continue
        given = (
            f"--{key.replace('_', '-')} {data[key]}"
            if getattr(args, key, None) is not None
            else f"{key}={data[key]}"
        )
        instead = f"; use --set {twin}={data[key]}" if twin else ""
        raise ConfigError(
            f"{given} is not used with --hr spots (the spot array is the HR grid){instead}"
        )


def _load_sample(args: argparse.Namespace) -> Any:
    from diffst.datasets import load_sample

    return load_sample(
        args.input, platform=args.platform, image_channels=args.image_channels,
        section=args.section, he_image=args.he_image, he_alignment=args.he_alignment,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run ``diffst prepare``; returns the exit status."""
    import yaml

    from diffst.config import to_dict

    cfg = build_config(args)
    if args.dry_run:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    sample = _load_sample(args)
    if args.dry_run:
        return _print_plan(sample, cfg)
    from diffst.preparation.api import prepare

    command = (
        shlex.join(["diffst", "prepare", *sys.argv[2:]]) if sys.argv[1:2] == ["prepare"] else None
    )
    store = prepare(
        sample, args.out, cfg, command=command or _reconstruct(args), overwrite=args.overwrite
    )
    counts = ", ".join(f"{s} {store.n_patches(s)}" for s in ("train", "val", "test"))
    print(f"wrote {store.path} ({len(store.manifest['genes'])} genes; patches: {counts})")
    print(_written_files(store.path))
    return 0


def _written_files(store: Path) -> str:
    """The store's files a person opens: summary, figure, manifest and config."""
    from diffst.keys import StoreFile

    files = {
        "summary": StoreFile.SUMMARY, "figure": StoreFile.ALIGNMENT_FIGURE,
        "manifest": StoreFile.MANIFEST, "config": StoreFile.RESOLVED_CONFIG,
    }  # fmt: skip
    return "\n".join(
        f"  {label + ':':<10}{store / name.value}"
        for label, name in files.items()
        if (store / name.value).is_file()
    )


def _reconstruct(args: argparse.Namespace) -> str:
    parts = ["diffst", "prepare", "--input", args.input, "--out", args.out]
    for flag in (*_FLAGS, "platform", "config", "section", "he_image", "he_alignment"):
        value = getattr(args, flag, None)
        if value is not None:
            parts += [f"--{flag.replace('_', '-')}", str(value)]
    if args.image_channels:
        parts += ["--image-channels", *args.image_channels]
    for item in args.set:
        parts += ["--set", item]
    return shlex.join(parts)


def _print_plan(sample: Any, cfg: Any) -> int:
    if cfg.hr == "spots":
        from diffst.preparation.spots.api import spot_plan_lines

        print("\n".join(spot_plan_lines(sample, cfg)))
        return 0
    from diffst.preparation.api import plan_section

    _, section, plan = plan_section(sample, cfg)
    print(f"# genes: {', '.join(section.genes)}")
    print(f"# grid: {section.geometry.shape_hr} HR bins; tissue {section.tissue.mean():.1%}")
    print("# patches: " + ", ".join(f"{s} {plan.count(s)}" for s in ("train", "val", "test")))
    return 0
