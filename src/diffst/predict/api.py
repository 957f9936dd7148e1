"""``predict``: checkpoint + section → super-resolved AnnData with per-bin uncertainty.

Steps (all validation happens before any network evaluation):

1. read the checkpoint (genes, grid, views, normalisation, LR layout) and check the section:
   genes present, image channels, pixel size (views are cut by µm extent, so a different µm/px
   is resampled, and logged), output path writable, tissue present;
2. build the section's LR map exactly as in training: grid pooling or the Visium lattice of
   pseudo-spots for transcript samples; the measured spots rasterised to the LR grid for spot
   samples (real Visium);
3. tile the tissue (:mod:`~diffst.predict.tiled`), encode each tile's condition once, draw K
   samples per tile with seeds from ``(cfg.seed, tile index)``, map them to counts, reduce them to
   mean/std/q05/q95 (:mod:`~diffst.predict.uncertainty`) and blend them into the section grid;
   under ``torchrun`` tiles are split across ranks and rank 0 gathers and writes;
4. compare re-aggregated predictions with the measured spots, optionally project onto them
   (:mod:`~diffst.predict.spots`), write the h5ad atomically and the figures.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffst.config import ConfigError, to_dict
from diffst.io.sample import InputError, SpatialSample
from diffst.predict.config import PredictConfig
from diffst.predict.uncertainty import Stat

if TYPE_CHECKING:
    import anndata

    from diffst.predict.tiled import TileContext
    from diffst.prepare.binning import GridGeometry

__all__ = ["SectionInputs", "build_section_inputs", "check_output_path", "predict", "resolve_genes"]

log = logging.getLogger("diffst.predict")


@dataclass
class SectionInputs:
    """The section the tiles are cut from: grid, tissue, measured (pseudo-)spots, LR source."""

    geometry: GridGeometry  # section HR grid (hr_um and factor of the checkpoint)
    tissue: np.ndarray  # [H, W] bool, bins predicted and written
    lr_layout: str  # "grid" (pooled HR), "visium" (pseudo-spots) or "spots" (measured spots)
    spot_centres_um: np.ndarray  # [n, 2] spots (LR cells for "grid"), µm
    spot_counts: np.ndarray  # [n, G] their counts
    spot_diameter_um: float  # spot diameter, or LR cell side for "grid", µm
    spot_shape: str  # "circle" | "square"
    spot_pitch_um: float  # lattice pitch, µm (LR rasterisation reach)
    hr: np.ndarray | None = None  # [G, H, W] HR counts ("grid" only: the LR is pooled from it)

    def lr_window(self, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw LR counts ``[G, p, p]`` float32 and mask ``[p, p]`` of the HR window at
        ``(row, col)`` with side ``size`` bins, made as in training (``p = ceil(size/factor)``):
        grid pooling of the window, or the spots rasterised onto the window's LR cells."""
        from diffst.prepare.binning import pool_grid, rasterise_spots

        f = self.geometry.factor
        if self.lr_layout != "grid":
            sub = self.geometry.sub_grid(row, col, size)
            return rasterise_spots(
                self.spot_counts,
                self.spot_centres_um,
                self.spot_diameter_um,
                sub,
                self.spot_pitch_um,
            )
        assert self.hr is not None
        p = -(-size // f)
        lr = np.zeros((self.hr.shape[0], p, p), dtype=np.float32)
        mask = np.zeros((p, p), dtype=bool)
        pooled = pool_grid(self.hr[:, row : row + size, col : col + size], f)
        pooled_mask = pool_grid(self.tissue[row : row + size, col : col + size], f) > 0
        lr[:, : pooled.shape[1], : pooled.shape[2]] = pooled
        mask[: pooled.shape[1], : pooled.shape[2]] = pooled_mask
        return lr, mask

    def lr_section(self) -> tuple[np.ndarray, np.ndarray]:
        """Whole-section LR raster ``[G, h, w]`` and mask ``[h, w]`` (for figures)."""
        from diffst.prepare.binning import pool_grid, rasterise_spots

        if self.lr_layout == "grid":
            assert self.hr is not None
            f = self.geometry.factor
            return pool_grid(self.hr, f).astype(np.float32), pool_grid(self.tissue, f) > 0
        return rasterise_spots(
            self.spot_counts,
            self.spot_centres_um,
            self.spot_diameter_um,
            self.geometry,
            self.spot_pitch_um,
        )


def check_output_path(out_path: str | os.PathLike[str]) -> Path:
    """Raise :class:`InputError` unless ``out_path`` can be written (before any compute)."""
    path = Path(out_path)
    if path.is_dir():
        raise InputError(f"{path}: output path is a folder; give a file name such as pred.h5ad")
    parent = path.parent if str(path.parent) else Path(".")
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{path}: output folder {existing} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{path}: output file exists and is not writable")
    return path


def resolve_genes(
    model_genes: list[str] | tuple[str, ...], sample: SpatialSample, allow_subset: bool
) -> tuple[str, ...]:
    """Section gene names in checkpoint order (matching names, or ids for spot tables).

    Raises :class:`InputError` listing the checkpoint genes the section lacks. Diff-ST models have
    a fixed gene panel (``G`` input/output channels), so predicting a subset is not possible.
    """
    names = list(sample.genes)
    ids = list(sample.spots.gene_ids) if sample.spots is not None else []
    by_name = set(names)
    id_to_name = dict(zip(ids, names, strict=False))
    resolved, missing = [], []
    for gene in model_genes:
        if gene in by_name:
            resolved.append(gene)
        elif gene in id_to_name:
            resolved.append(id_to_name[gene])
        else:
            missing.append(gene)
    if missing:
        shown = ", ".join(missing[:20]) + (
            f", … ({len(missing)} in all)" if len(missing) > 20 else ""
        )
        hint = (
            " (allow_gene_subset was requested, but the Diff-ST model has a fixed panel of "
            f"{len(model_genes)} genes as input and output channels, so it cannot predict a subset)"
            if allow_subset
            else ""
        )
        where = next(iter(sample.source_files.values()), sample.name)
        raise InputError(
            f"{where}: field genes lacks {len(missing)} of the checkpoint's {len(model_genes)} "
            f"genes: {shown}{hint}"
        )
    return tuple(resolved)


def _lr_layout(meta: dict[str, Any]) -> tuple[str, float, float]:
    """``(lr_mode, spot diameter µm, spot pitch µm)`` recorded in the store manifest's geometry."""
    geo = meta["geometry"]
    missing = [k for k in ("lr_mode", "spot_diameter_um", "spot_pitch_um") if k not in geo]
    if missing:
        raise InputError(f"checkpoint store_meta: field geometry lacks {missing}")
    return str(geo["lr_mode"]), float(geo["spot_diameter_um"]), float(geo["spot_pitch_um"])


def _spot_tissue(
    centres_um: np.ndarray, pitch_um: float, lattice: str | None, geometry: GridGeometry
) -> np.ndarray:
    """``[H, W]`` bins inside the union of the spots' lattice (Voronoi) cells."""
    from scipy.spatial import cKDTree

    reach = pitch_um / np.sqrt(3.0) if lattice != "square" else pitch_um / np.sqrt(2.0)
    xs, ys = geometry.bin_centres_um()
    gx, gy = np.meshgrid(xs, ys)
    dist, _ = cKDTree(centres_um).query(np.column_stack([gx.ravel(), gy.ravel()]), k=1)
    return (dist <= reach).reshape(geometry.shape_hr)


def _inputs_from_spots(
    sample: SpatialSample, genes: tuple[str, ...], hr_um: float, factor: int
) -> SectionInputs:
    """Real spot data (e.g. Visium): the measured spots give the LR map of every tile."""
    from diffst.prepare.binning import GridGeometry
    from diffst.prepare.tiling import tissue_mask_bins

    table = sample.spots
    assert table is not None
    table.require_raw_counts()
    column = {g: k for k, g in enumerate(table.genes)}
    counts = np.asarray(table.counts[:, [column[g] for g in genes]].todense(), dtype=np.float64)
    centres = np.asarray(table.centers_um, dtype=np.float64)
    if len(centres) == 0:
        raise InputError(f"{table.path or sample.name}: field spots is empty (no tissue)")
    pitch = float(table.pitch_um or table.diameter_um)
    margin = max(pitch, table.diameter_um) / 2
    lo, hi = centres.min(axis=0) - margin, centres.max(axis=0) + margin
    geometry = GridGeometry.covering((lo[0], lo[1], hi[0], hi[1]), hr_um, factor)
    tissue = _spot_tissue(centres, pitch, table.lattice, geometry)
    if sample.tissue_mask is not None:
        tissue &= tissue_mask_bins(sample, geometry)
    return SectionInputs(
        geometry, tissue, "spots", centres, counts, float(table.diameter_um), table.shape, pitch
    )


def _inputs_from_transcripts(
    sample: SpatialSample, genes: tuple[str, ...], meta: dict[str, Any]
) -> SectionInputs:
    """HR platforms: the section rasters of ``diffst prepare`` (same grid, tissue, pseudo-spots)."""
    from diffst.prepare import api as prep
    from diffst.prepare.binning import pool_grid, scan_transcripts
    from diffst.prepare.config import PrepareConfig

    assert sample.transcripts is not None
    geo = meta["geometry"]
    layout, diameter, pitch = _lr_layout(meta)
    patch = int(meta["hr_size"])
    pcfg = PrepareConfig(
        hr_um=float(geo["hr_um"]),
        factor=int(geo["factor"]),
        lr=layout,  # type: ignore[arg-type]
        spot_diameter_um=diameter,
        spot_pitch_um=pitch,
        patch=patch,
        stride=patch,
    )
    scan = scan_transcripts(sample.transcripts)
    geometry = prep.section_geometry(sample, pcfg, scan)
    section = prep.build_section_inputs(sample, genes, geometry, pcfg, scan)
    if layout == "visium":
        assert section.spot_centres_um is not None and section.spot_counts is not None
        return SectionInputs(
            geometry,
            section.tissue,
            "visium",
            section.spot_centres_um,
            section.spot_counts.astype(np.float64),
            diameter,
            "circle",
            pitch,
            section.hr,
        )
    f = geometry.factor
    lr_mask = pool_grid(section.tissue, f) > 0
    a, b = np.nonzero(lr_mask)
    x0, y0 = geometry.origin_um
    centres = np.column_stack([x0 + (b + 0.5) * geometry.lr_um, y0 + (a + 0.5) * geometry.lr_um])
    counts = pool_grid(section.hr, f)[:, a, b].T.astype(np.float64)
    return SectionInputs(
        geometry,
        section.tissue,
        "grid",
        centres,
        counts,
        geometry.lr_um,
        "square",
        geometry.lr_um,
        section.hr,
    )


def build_section_inputs(
    sample: SpatialSample, genes: tuple[str, ...], meta: dict[str, Any]
) -> SectionInputs:
    """Section grid, tissue bins, LR map and measured spots for a sample (no network work).

    Parameters
    ----------
    sample
        Section from any reader: transcripts (HR platforms) or spots (Visium and the like).
    genes
        Section gene names in checkpoint order (:func:`resolve_genes`).
    meta
        Checkpoint ``store_meta`` (geometry, normalisation, LR layout).
    """
    if sample.transcripts is not None:
        inputs = _inputs_from_transcripts(sample, genes, meta)
    else:
        geo = meta["geometry"]
        inputs = _inputs_from_spots(sample, genes, float(geo["hr_um"]), int(geo["factor"]))
        layout, _, _ = _lr_layout(meta)
        if layout != "visium":
            log.warning(
                "the checkpoint was trained with %s LR pooling; real spots are rasterised to its "
                "LR grid, train with `--lr visium` for spot data",
                layout,
            )
    if not inputs.tissue.any():
        raise InputError(f"sample {sample.name!r}: no tissue bin found; nothing to predict")
    return inputs


def _view_config(meta: dict[str, Any]) -> Any:
    import dataclasses

    from diffst.config import from_dict
    from diffst.prepare.config import ViewConfig

    known = {f.name for f in dataclasses.fields(ViewConfig)}
    return from_dict(ViewConfig, {k: v for k, v in meta.get("views", {}).items() if k in known})


def _spot_report(
    stats: np.ndarray, tissue: np.ndarray, inputs: SectionInputs, genes: list[str], project: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    """Consistency with the measured spots (and the projection when asked for)."""
    from diffst.predict.spots import (
        aggregate_to_spots,
        assign_bins_to_spots,
        project_to_spots,
        spot_consistency,
        spot_membership,
    )

    geo = inputs.geometry
    spot_of_bin = assign_bins_to_spots(
        inputs.spot_centres_um,
        inputs.spot_diameter_um,
        inputs.spot_shape,  # type: ignore[arg-type]
        geo.origin_um,
        geo.hr_um,
        geo.shape_hr,
        bin_mask=tissue,
    )
    n = len(inputs.spot_centres_um)
    member = spot_membership(spot_of_bin, n)
    bins_per_spot = np.bincount(spot_of_bin[spot_of_bin >= 0], minlength=n)
    agg = aggregate_to_spots(stats[Stat.MEAN], member)
    report = spot_consistency(agg, inputs.spot_counts, genes, bins_per_spot)
    report["projected"] = project
    if project:
        stats = project_to_spots(stats, spot_of_bin, inputs.spot_counts)
    return stats, report


def _write_figures(
    out_dir: Path,
    cfg: PredictConfig,
    stats: np.ndarray,
    ctx: TileContext,
    genes: list[str],
    tissue: np.ndarray,
) -> list[str]:
    from diffst.predict.figures import image_on_grid, write_gene_figures

    selected = list(cfg.figure_genes)
    if not selected and cfg.n_figure_genes > 0:
        totals = np.nansum(stats[Stat.MEAN][:, tissue], axis=1)
        selected = [genes[k] for k in np.argsort(-totals)[: cfg.n_figure_genes]]
    if not selected:
        return []
    shown = np.where(tissue, 1.0, np.nan)
    rgb = image_on_grid(ctx.image, ctx.inputs.geometry) if ctx.image is not None else None
    lr_raw, lr_mask = ctx.inputs.lr_section()
    lr = np.where(lr_mask, lr_raw, np.nan)
    paths = write_gene_figures(
        out_dir,
        genes,
        selected,
        stats[Stat.MEAN] * shown,
        stats[Stat.STD] * shown,
        lr,
        rgb,
        ctx.inputs.geometry,
        ctx.inputs.geometry.factor,
    )
    return [str(p) for p in paths]


def _fullres_um_per_px(sample: SpatialSample) -> float | None:
    """µm per full-resolution pixel recorded by the reader (Visium), else ``None``."""
    value = sample.metadata.get("um_per_px_fullres")
    return float(value) if isinstance(value, int | float) else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _check_image(sample: SpatialSample, bundle: Any, views: Any) -> tuple[Any, Any]:
    """The image the model needs and the view config with its channels, checked up front.

    Channels are picked by the training image's channel names when the checkpoint records them
    and the section has them all, else all channels are used (their number must match).
    Returns ``(None, views)`` for models without a histology branch.
    """
    from dataclasses import replace

    from diffst.prepare.views import channel_indices

    meta = bundle.store_meta
    if not bundle.config.model.use_histology:
        return None, views
    image = sample.image
    if image is None:
        raise InputError(
            f"sample {sample.name!r}: field image is missing, but the checkpoint's model "
            "conditions on histology"
        )
    trained_image = meta.get("image", {})
    names = tuple(trained_image.get("channels", ()))
    if names and all(c in image.channels for c in names):
        views = replace(views, channels=names)
    n_channels = len(channel_indices(image, tuple(views.channels)))
    if n_channels != int(meta["image_channels"]):
        raise InputError(
            f"{image.path or sample.name}: field channels: the image has {n_channels} channel(s) "
            f"{list(image.channels)} but the model was trained on {meta['image_channels']} "
            f"{list(names) if names else ''}".rstrip()
        )
    trained = trained_image.get("um_per_px")
    if trained and abs(image.um_per_px / float(trained) - 1.0) > 0.01:
        log.warning(
            "image pixel size %.4g µm/px differs from training (%.4g µm/px): the views are "
            "resampled from the same µm extent to the training view size",
            image.um_per_px,
            float(trained),
        )
    return image, views


def _check_options(cfg: PredictConfig, model_genes: list[str]) -> None:
    """Configuration errors that need no data (raised before anything is loaded)."""
    import importlib.util

    if cfg.write_spatialdata and importlib.util.find_spec("spatialdata") is None:
        raise ConfigError(
            "predict.write_spatialdata: the optional package 'spatialdata' is not installed "
            "(pip install spatialdata), or leave the option off to write the h5ad only"
        )
    unknown = [g for g in cfg.figure_genes if g not in model_genes]
    if unknown:
        raise ConfigError(f"predict.figure_genes: {unknown} are not genes of the checkpoint")


def _metadata(
    cfg: PredictConfig,
    bundle: Any,
    sample: SpatialSample,
    ctx: TileContext,
    n_tiles: int,
    stride: int,
    section_genes: tuple[str, ...],
) -> dict[str, Any]:
    """``uns['diffst']``: how this prediction was made."""
    from diffst.diffusion import count_network_evaluations

    return {
        "config": to_dict(cfg),
        "checkpoint": str(bundle.path),
        "checkpoint_sha256": _sha256(Path(bundle.path)),
        "checkpoint_step": int(bundle.step),
        "sampler": cfg.sampler,
        "steps": cfg.steps,
        "eta": cfg.eta,
        "seed": cfg.seed,
        "n_samples": cfg.n_samples,
        "network_evaluations_per_sample": count_network_evaluations(cfg.sampler, cfg.steps),
        "geometry": ctx.inputs.geometry.to_dict(),
        "lr_layout": ctx.inputs.lr_layout,
        "tiles": {"n": n_tiles, "patch_bins": ctx.patch, "stride_bins": stride},
        "sample": {"name": sample.name, "platform": str(sample.platform)},
        "section_genes": list(section_genes),
        "units": "counts per HR bin",
        "quantiles": "per-tile quantiles over the K samples, blended across overlapping tiles",
    }


def predict(
    checkpoint: str | os.PathLike[str],
    sample: SpatialSample,
    out_path: str | os.PathLike[str],
    cfg: PredictConfig | None = None,
    *,
    library_id: str | None = None,
    figures_dir: str | os.PathLike[str] | None = None,
) -> anndata.AnnData | None:
    """Super-resolve a whole section with a trained checkpoint.

    Parameters
    ----------
    checkpoint
        ``.pt`` file or run folder written by ``diffst train``.
    sample
        Section from any reader (transcripts or spots), with its image when the model uses one.
    out_path
        ``.h5ad`` written atomically (layout: :mod:`diffst.predict.to_anndata`).
    cfg
        Sampler, steps, K, seed, tiling and output options.
    library_id
        Key under ``uns['spatial']`` (default: the sample name).
    figures_dir
        Folder for the per-gene PNG figures (none when ``None``).

    Returns
    -------
    anndata.AnnData | None
        The prediction (``None`` on ranks other than 0 under ``torchrun``).
        ``uns['diffst']['spot_consistency']`` holds the agreement with the measured spots.
    """
    from diffst.data.transforms import NormStats
    from diffst.predict.tiled import TileContext, run_tiles
    from diffst.predict.to_anndata import (
        build_anndata,
        write_h5ad_atomic,
        write_spatialdata_atomic,
    )
    from diffst.prepare.views import channel_indices, intensity_range
    from diffst.train.checkpoint import load_for_inference
    from diffst.train.distributed import init_distributed

    cfg = cfg or PredictConfig()
    out = check_output_path(out_path)
    env = init_distributed(cfg.device)
    bundle = load_for_inference(checkpoint, env.device)
    meta = bundle.store_meta
    _check_options(cfg, list(meta["genes"]))
    norm = NormStats.from_dict(meta["normalisation"])
    if norm.kind == "minmax_patch":
        raise ConfigError(
            f"{bundle.path}: normalisation 'minmax_patch' scales each patch by its HR maximum, "
            "which a new section does not have; train with log1p_gene to predict sections"
        )
    section_genes = resolve_genes(meta["genes"], sample, cfg.allow_gene_subset)
    views = _view_config(meta)
    image, views = _check_image(sample, bundle, views)
    inputs = build_section_inputs(sample, section_genes, meta)
    ranges = None
    if image is not None:
        ranges = intensity_range(
            image, channel_indices(image, tuple(views.channels)), views.intensity_percentiles
        )
    ctx = TileContext(
        inputs,
        norm,
        len(section_genes),
        image,
        views,
        ranges,
        int(meta["hr_size"]),
        int(meta["lr_size"]),
    )
    acc, n_tiles, stride = run_tiles(bundle, ctx, cfg, norm, env)
    if not env.is_main:
        return None
    genes = [str(x) for x in meta["genes"]]
    tissue = inputs.tissue & acc.covered()
    stats, report = _spot_report(acc.result(), tissue, inputs, genes, cfg.project_to_spots)
    metadata = _metadata(cfg, bundle, sample, ctx, n_tiles, stride, section_genes)
    metadata["spot_consistency"] = report
    adata = build_anndata(
        stats,
        tissue,
        inputs.geometry,
        genes,
        image=image,
        library_id=library_id or sample.name,
        metadata=metadata,
        hires_max_px=cfg.hires_max_px,
        fullres_um_per_px=_fullres_um_per_px(sample),
    )
    write_h5ad_atomic(adata, out)
    if cfg.write_spatialdata:
        write_spatialdata_atomic(adata, out)
    if figures_dir is not None:
        adata.uns["diffst"]["figures"] = _write_figures(
            Path(figures_dir), cfg, stats, ctx, genes, tissue
        )
    log.info("wrote %s: %d bins × %d genes", out, adata.n_obs, adata.n_vars)
    return adata
