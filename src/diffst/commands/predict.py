"""``diffst predict``: options → :class:`~diffst.inference.config.PredictConfig` → :func:`predict`.

Examples
--------
``diffst predict --checkpoint run/ --input data/visium_outs --out pred.h5ad``
``diffst predict --checkpoint run/ --input merfish_mini --out pred.h5ad --sampler dpmpp --steps 10``
``torchrun --nproc_per_node 4 -m diffst predict --checkpoint run/ --input sec/ --out pred.h5ad``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffst.commands.options import add_input_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``diffst predict`` (no heavy imports here)."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint .pt or training run folder")
    add_input_arguments(parser, "section folder/file")
    parser.add_argument("--out", required=True, help="output .h5ad (written atomically)")
    parser.add_argument(
        "--region", type=float, nargs=4, default=None, metavar=("X0", "Y0", "X1", "Y1"),
        help="predict this rectangle only, µm in the section frame (snapped outwards to its LR "
        "grid): time and memory follow the region",
    )  # fmt: skip
    parser.add_argument(
        "--cells", default=None, metavar="FILE",
        help="cell boundaries (label image .tif/.png or GeoJSON in image pixels, or a vertex "
        "table .parquet/.csv in µm): also write a per-cell AnnData",
    )  # fmt: skip
    parser.add_argument(
        "--cells-out", default=None, metavar="H5AD",
        help="per-cell output (default: <out stem>.cells.h5ad)",
    )  # fmt: skip
    parser.add_argument(
        "--image-channels",
        nargs="+",
        default=None,
        metavar="NAME",
        help="MERFISH mosaics to read: DAPI, polyT or both (as the checkpoint was trained: "
        "e.g. DAPI polyT for a model trained on merfish_mini)",
    )
    parser.add_argument(
        "--sampler", choices=("ddpm", "ddim", "dpmpp"), default=None,
        help="reverse-diffusion sampler (default: the checkpoint's diffusion.sampler, i.e. its "
        "preset's: ddpm for paper, ddim for small)",
    )  # fmt: skip
    parser.add_argument(
        "--steps", type=int, default=None,
        help="sampling steps (default: the checkpoint's diffusion.sampling_steps; paper 20)",
    )  # fmt: skip
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM η (default: 0)")
    parser.add_argument("--samples", type=int, default=8, help="samples per tile, K (default: 8)")
    parser.add_argument(
        "--mean-estimator",
        choices=("auto", "denoiser", "samples"),
        default="auto",
        help="point prediction X: the network's posterior mean at t = T (denoiser; v/x0 "
        "checkpoints) or the mean of the K samples; auto picks denoiser where possible",
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed (default: 0)")
    parser.add_argument("--overlap", type=int, default=None, help="tile overlap, HR bins")
    parser.add_argument(
        "--batch-size", type=int, default=0,
        help="tiles per network batch (default 0: automatic, many tiles of a small network on "
        "a CPU, 4 on a GPU)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16 autocast where native (recent GPUs and CPUs)",
    )
    parser.add_argument(
        "--project",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rescale each measured spot's (LR cell's) bins so their totals match its measured "
        "counts (default; --no-project keeps the network's raw estimate, whose totals run low)",
    )
    parser.add_argument(
        "--max-missing-genes",
        type=float,
        default=0.1,
        metavar="SHARE",
        help="share of the checkpoint's genes the section may lack (default 0.1): their LR input "
        "is imputed from co-expressed genes and they are flagged in var['in_section']; more is "
        "refused (0: refuse any)",
    )
    parser.add_argument(
        "--stream",
        choices=("auto", "on", "off"),
        default="auto",
        help="write the prediction block by block, memory bounded by a block (on), or hold the "
        "whole section in memory (off); auto (default) streams when the whole-section "
        "statistics (20 bytes per gene and HR bin) exceed --block-gib",
    )
    parser.add_argument(
        "--block-gib",
        type=float,
        default=1.0,
        metavar="GIB",
        help="memory of one streamed block's statistics (default 1.0 GiB)",
    )
    parser.add_argument(
        "--uncertainty-genes",
        nargs="+",
        default=None,
        metavar="GENE",
        help="write std / q05 / q95 / sample_mean for these genes only, as obsm DataFrames "
        "(default: every gene, as layers; 'none': no sample statistics)",
    )
    parser.add_argument("--figures", default=None, metavar="DIR", help="per-gene PNG figures")
    parser.add_argument(
        "--figure-genes", nargs="+", default=(), metavar="GENE", help="genes drawn (default: top 4)"
    )
    parser.add_argument("--library-id", default=None, help="key in uns['spatial']")
    parser.add_argument(
        "--spatialdata", action="store_true", help="also write a SpatialData .zarr (optional dep)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _merfish_channels(args: argparse.Namespace) -> list[str] | None:
    """For a MERFISH input without --image-channels: the mosaics the checkpoint was trained on."""
    from diffst.inference.setup import checkpoint_image_channels
    from diffst.io import detect_platform

    spec = str(args.input)
    is_merfish = spec == "merfish_mini" and not Path(spec).exists()
    if not is_merfish and Path(spec).exists():
        platform = detect_platform(Path(spec)) if args.platform == "auto" else args.platform
        is_merfish = str(platform) == "merfish"
    if not is_merfish:
        return None
    names = checkpoint_image_channels(args.checkpoint)
    known = {"dapi", "polyt"}
    return list(names) if names and {n.lower() for n in names} <= known else None


def _uncertainty_genes(values: list[str] | None) -> tuple[str, ...] | None:
    """``--uncertainty-genes``: ``None`` (every gene), ``none`` → ``()``, else the genes."""
    if values is None:
        return None
    if [v.lower() for v in values] == ["none"]:
        return ()
    return tuple(values)


def run(args: argparse.Namespace) -> int:
    """Build the configuration, read the section and predict."""
    from diffst.api import predict
    from diffst.inference.config import PredictConfig

    cfg = PredictConfig(
        sampler=args.sampler,
        steps=args.steps,
        eta=args.eta,
        n_samples=args.samples,
        mean_estimator=args.mean_estimator,
        seed=args.seed,
        overlap_bins=args.overlap,
        batch_size=args.batch_size,
        project_to_spots=args.project,
        max_missing_genes=args.max_missing_genes,
        device=args.device,
        precision=args.precision,
        figure_genes=tuple(args.figure_genes),
        write_spatialdata=args.spatialdata,
        region_um=tuple(args.region) if args.region is not None else None,
        stream=args.stream,
        block_gib=args.block_gib,
        uncertainty_genes=_uncertainty_genes(args.uncertainty_genes),
    )
    from diffst.datasets import load_sample

    channels = args.image_channels or _merfish_channels(args)
    sample = load_sample(
        args.input, platform=args.platform, image_channels=channels, section=args.section,
        he_image=args.he_image, he_alignment=args.he_alignment,
    )  # fmt: skip
    adata = predict(
        args.checkpoint,
        sample,
        args.out,
        cfg,
        library_id=args.library_id,
        figures_dir=args.figures,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        cells=args.cells,
        cells_out=args.cells_out,
    )
    if adata is not None:
        report = adata.uns["diffst"]["spot_consistency"]
        below = adata.uns["diffst"].get("below_pitch")
        unit = "bins" if below is None else "sub-spots"
        print(
            f"wrote {args.out}: {adata.n_obs} {unit} × {adata.n_vars} genes; spot consistency "
            f"mean PCC {report['mean_pcc']:.3f} over {report['n_spots']} spots"
        )
        if below is not None:
            k = int(below["factor"])
            print(
                f"  {k}×{k} sub-spots of {float(below['subspot_um']):.4g} µm per measured spot: "
                f"a spot-array model applied one scale below its training data (assumed, not "
                "measured; uns['diffst']['below_pitch'])"
            )
        ratio = report["total_ratio"]
        if report.get("projected"):
            print(f"  X rescaled to the measured spot totals (raw total ratio {ratio:.3f})")
        else:
            print(f"  X is the raw estimate (--no-project): total ratio {ratio:.3f} to the spots")
        if "cells" in adata.uns:
            c = adata.uns["cells"]
            print(
                f"  cells:       {c['path']}: {c['n_cells']} of {c['n_cells_in_source']} cells "
                "(≥ 50 % of their area on predicted bins)"
            )
        streamed = adata.uns["diffst"].get("streamed")
        if streamed is not None:
            print(
                f"  streamed in {streamed['blocks']} blocks of up to "
                f"{streamed['block_side_bins']} bins a side (X and layers on disk only; "
                "diffst.read_prediction reads chosen genes)"
            )
        if args.spatialdata:
            print(f"  spatialdata: {Path(args.out).with_suffix('.zarr')}")
        if args.figures is not None:
            print(f"  figures:     {args.figures}")
    return 0
