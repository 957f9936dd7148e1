"""``predict``: checkpoint + section → super-resolved AnnData with per-bin uncertainty.

Steps (all validation happens before any network evaluation):

1. read the checkpoint (genes, grid, views, normalisation, LR layout) and check the section:
   genes present, image channels, pixel size (views are cut by µm extent, so a different µm/px
   is resampled, and logged), output path writable, tissue present;
2. build the section's LR map exactly as in training: grid pooling or the Visium lattice of
   pseudo-spots for transcript samples; the measured spots rasterised to the LR grid for spot
   samples (real Visium);
3. tile the tissue (:mod:`~diffst.inference.tiled`), encode each tile's condition once, draw K
   samples per tile with seeds from ``(cfg.seed, tile index)``, map them to counts, reduce them to
   mean/std/q05/q95 (:mod:`~diffst.inference.uncertainty`) and blend them into the section grid;
   under ``torchrun`` tiles are split across ranks and rank 0 gathers and writes;
4. compare re-aggregated predictions with the measured spots, optionally project onto them
   (:mod:`~diffst.inference.spots`), write the h5ad atomically and the figures.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffst.config import ConfigError, sha256_file, to_dict
from diffst.inference.config import PredictConfig
from diffst.inference.setup import precision_used, set_up
from diffst.inference.spots import spot_report
from diffst.io.sample import InputError, SpatialSample

if TYPE_CHECKING:
    import anndata

    from diffst.inference.tiled import TileContext

__all__ = ["check_output_path", "gene_table", "predict", "write_prediction"]

log = logging.getLogger("diffst.inference")


def check_output_path(
    out_path: str | os.PathLike[str], *, overwrite: bool = False, spatialdata: bool = False
) -> Path:
    """Raise unless ``out_path`` can be written (before any compute).

    Raises
    ------
    InputError
        The path is a folder, or it or its folder is not writable.
    ConfigError
        The file (or, with ``spatialdata``, its ``.zarr``) exists and ``overwrite`` is false.
    """
    path = Path(out_path)
    if path.is_dir():
        raise InputError(f"{path}: output path is a folder; give a file name such as pred.h5ad")
    for target in (path, path.with_suffix(".zarr")) if spatialdata else (path,):
        if target.exists() and not overwrite:
            raise ConfigError(f"{target}: output exists; pass --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{path}: output folder {existing} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{path}: output file exists and is not writable")
    return path


def gene_table(
    genes: list[str],
    sample: SpatialSample,
    lr_counts: np.ndarray,
    stats: np.ndarray | None,
    report: dict[str, Any],
    measured: np.ndarray | None = None,
    sums: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The ``var`` columns of a prediction (see :mod:`diffst.inference.to_anndata`).

    Parameters
    ----------
    genes
        The checkpoint's genes (``var_names``).
    sample
        The section; its spot table's second identifiers give ``gene_ids`` / ``gene_symbols``.
    lr_counts
        ``[n, G]`` counts of the section's LR input (spots or LR cells).
    stats
        ``[5, G, N]`` statistics of the ``N`` written bins (axis 0 as ``Stat``); or ``None``
        with ``sums``.
    report
        Spot consistency (:func:`~diffst.inference.spots.spot_report`).
    measured
        ``[G]`` bool, genes the section measures (default: all). The others get
        ``in_section = False``, ``lr_source = "imputed"`` and NaN ``lr_counts``.
    sums
        ``(Σ X [G], mean std [G])`` over the written bins, when ``stats`` is not in memory
        (a streamed prediction).
    """
    from diffst.inference.uncertainty import Stat

    table: dict[str, Any] = {}
    spots = sample.spots
    if spots is not None and len(spots.gene_ids) == len(spots.genes):
        by_name = dict(zip(spots.genes, spots.gene_ids, strict=True))
        by_id = dict(zip(spots.gene_ids, spots.genes, strict=True))
        if any(g in by_name for g in genes):
            table["gene_ids"] = [by_name.get(g, "") for g in genes]
        elif any(g in by_id for g in genes):
            table["gene_symbols"] = [by_id.get(g, "") for g in genes]
    have = np.ones(len(genes), dtype=bool) if measured is None else np.asarray(measured, bool)
    table["feature_types"] = ["Gene Expression"] * len(genes)
    table["in_section"] = have
    table["lr_source"] = np.where(have, "measured", "imputed")
    lr = np.asarray(lr_counts, dtype=np.float64).sum(axis=0)
    table["lr_counts"] = np.where(have, lr, np.nan)
    if sums is not None:
        table["predicted_counts"], table["mean_std"] = sums
    elif stats is not None:
        table["predicted_counts"] = stats[Stat.MEAN].sum(axis=1, dtype=np.float64)
        table["mean_std"] = stats[Stat.STD].mean(axis=1, dtype=np.float64)
    else:
        raise ValueError("gene_table: give stats or sums")
    pcc = report.get("pcc", {})
    table["spot_pcc"] = np.array([pcc.get(g, np.nan) for g in genes], dtype=np.float64)
    return table


def _write_figures(
    out_dir: Path, cfg: PredictConfig, adata: anndata.AnnData, ctx: TileContext,
    path: Path | None = None,
) -> list[str]:  # fmt: skip
    """Per-gene PNGs of ``cfg.figure_genes`` (default: the most expressed genes); a streamed
    prediction's genes are read from its file ``path``."""
    from diffst.inference.figures import image_on_grid, write_gene_figures

    genes = list(adata.var_names)
    selected = list(cfg.figure_genes)
    if not selected and cfg.n_figure_genes > 0:
        if adata.X is None:  # streamed: X is on disk, its column sums in var
            totals = adata.var["predicted_counts"].to_numpy()
        else:
            totals = np.asarray(adata.X.sum(axis=0)).ravel()
        selected = [genes[k] for k in np.argsort(-totals)[: cfg.n_figure_genes]]
    if not selected:
        return []
    if adata.X is None:
        from diffst.inference.to_anndata import read_prediction

        if path is None:
            raise ValueError("_write_figures: a prediction without X needs its file path")
        adata = read_prediction(path, selected)
    index = [list(adata.var_names).index(g) for g in selected]
    rows, cols = adata.obs["bin_row"].to_numpy(), adata.obs["bin_col"].to_numpy()
    grids = np.full((2, len(index), *ctx.inputs.geometry.shape_hr), np.nan, dtype=np.float32)
    grids[0][:, rows, cols] = np.asarray(adata.X[:, index]).T
    if "std" in adata.layers:
        grids[1][:, rows, cols] = np.asarray(adata.layers["std"][:, index]).T
    elif "std" in adata.obsm:  # a chosen subset of genes has sample statistics
        have = adata.obsm["std"]
        for k, gene in enumerate(selected):
            if gene in have:
                grids[1][k, rows, cols] = have[gene].to_numpy()
    rgb = image_on_grid(ctx.image, ctx.inputs.geometry) if ctx.image is not None else None
    lr_raw, lr_mask = ctx.inputs.lr_section()
    lr = np.where(lr_mask, lr_raw[index], np.nan)
    paths = write_gene_figures(
        out_dir, selected, selected, grids[0], grids[1], lr, rgb, ctx.inputs.geometry,
        ctx.inputs.geometry.factor,
    )  # fmt: skip
    return [str(p) for p in paths]


def _fullres_um_per_px(sample: SpatialSample) -> float | None:
    """µm per full-resolution pixel recorded by the reader (Visium), else ``None``."""
    value = sample.metadata.get("um_per_px_fullres")
    return float(value) if isinstance(value, int | float) else None


def _metadata(
    cfg: PredictConfig,
    bundle: Any,
    sample: SpatialSample,
    ctx: TileContext,
    n_tiles: int,
    stride: int,
) -> dict[str, Any]:
    """``uns['diffst']``: how this prediction was made."""
    from diffst.diffusion import count_network_evaluations
    from diffst.inference.config import resolve_estimator
    from diffst.inference.to_anndata import uncertainty_entry

    sampler, steps = cfg.sampling(bundle.config.diffusion)  # the checkpoint's where unset
    return {
        "config": to_dict(cfg),
        "checkpoint": str(bundle.path),
        "checkpoint_sha256": sha256_file(Path(bundle.path)),
        "checkpoint_step": int(bundle.step),
        "sampler": sampler,
        "steps": steps,
        "eta": cfg.eta,
        "seed": cfg.seed,
        "n_samples": cfg.n_samples,
        "mean_estimator": resolve_estimator(cfg.mean_estimator, bundle.schedule.prediction),
        "precision_used": precision_used(cfg, bundle),
        "network_evaluations_per_sample": count_network_evaluations(sampler, steps),
        "geometry": ctx.inputs.geometry.to_dict(),
        "lr_layout": ctx.inputs.lr_layout,
        "tiles": {"n": n_tiles, "patch_bins": ctx.patch, "stride_bins": stride},
        "sample": {"name": sample.name, "platform": str(sample.platform)},
        "genes": [str(g) for g in bundle.store_meta["genes"]],
        "units": "counts per HR bin" if ctx.subspots is None else "counts per sub-spot",
        "missing_genes": _missing_entry(ctx),
        "uncertainty": uncertainty_entry(cfg.uncertainty_genes),
        "below_pitch": None if ctx.subspots is None else ctx.subspots.to_dict(),
        "quantiles": "5–95 % quantiles of the K samples of the tile where the bin is most "
        "central (X and sample_mean are blended across overlapping tiles)",
    }


def _missing_entry(ctx: TileContext) -> dict[str, Any] | None:
    """``uns['diffst']['missing_genes']``: checkpoint genes the section does not measure."""
    if not ctx.missing:
        return None
    return {
        "genes": list(ctx.missing),
        "n": len(ctx.missing),
        "lr_input": "not measured: imputed as the correlation-weighted average of the normalised "
        "LR maps of the gene's training Pearson neighbours that the section measures (all "
        "measured genes when none), then super-resolved with the image; not projected onto "
        "the spots and not scored against them",
    }


def predict(
    checkpoint: str | os.PathLike[str],
    sample: SpatialSample,
    out_path: str | os.PathLike[str],
    cfg: PredictConfig | None = None,
    *,
    library_id: str | None = None,
    figures_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    in_memory: bool = False,
) -> anndata.AnnData | None:
    """Super-resolve a whole section with a trained checkpoint.

    Parameters
    ----------
    checkpoint
        ``.pt`` file or run folder written by ``diffst train``.
    sample
        Section from any reader (transcripts or spots), with its image when the model uses one.
    out_path
        ``.h5ad`` written atomically (layout: :mod:`diffst.inference.to_anndata`).
    cfg
        Sampler, steps, K, seed, tiling and output options.
    library_id
        Key under ``uns['spatial']`` (default: the sample name).
    figures_dir
        Folder for the per-gene PNG figures (none when ``None``).
    overwrite
        Replace an existing ``out_path`` (without it an existing file is an error, raised
        before any compute).
    progress
        Show a progress bar over the tiles (rank 0).
    in_memory
        The caller needs the whole prediction in memory (the per-cell output): refuse to
        stream it.

    Returns
    -------
    anndata.AnnData | None
        The prediction (``None`` on ranks other than 0 under ``torchrun``).
        ``uns['diffst']['spot_consistency']`` holds the agreement with the measured spots.
        A streamed prediction (``cfg.stream``; :mod:`diffst.inference.streamed`) is returned
        without ``X`` and layers, which stay in the file: read genes with
        :func:`~diffst.inference.to_anndata.read_prediction`.
    """
    from diffst.distributed import init_distributed
    from diffst.inference.streamed import check_streamable, should_stream
    from diffst.inference.tiled import run_tiles

    cfg = cfg or PredictConfig()
    out = check_output_path(out_path, overwrite=overwrite, spatialdata=cfg.write_spatialdata)
    if cfg.stream == "on":
        check_streamable(cfg, in_memory)
    env = init_distributed(cfg.device)
    bundle, ctx = set_up(checkpoint, sample, cfg, env.device, hr_map=False)
    if should_stream(cfg, ctx.n_genes, ctx.inputs.geometry.shape_hr):
        check_streamable(cfg, in_memory)
        return _predict_streamed(
            bundle, ctx, cfg, env, sample, out, library_id, figures_dir, progress
        )
    with _TileBar(progress and env.is_main) as bar:
        acc, n_tiles, stride = run_tiles(bundle, ctx, cfg, ctx.norm, env, on_progress=bar)
    if not env.is_main:
        return None
    metadata = _metadata(cfg, bundle, sample, ctx, n_tiles, stride)
    covered = acc.covered()
    adata = _write_outputs(
        acc.result(in_place=True), covered, ctx, sample, cfg, metadata, out, library_id
    )
    if figures_dir is not None:
        paths = _write_figures(Path(figures_dir), cfg, adata, ctx)
        log.info("wrote %d figure(s) to %s", len(paths), figures_dir)
    return adata


def _predict_streamed(
    bundle: Any, ctx: TileContext, cfg: PredictConfig, env: Any, sample: SpatialSample,
    out: Path, library_id: str | None, figures_dir: str | os.PathLike[str] | None,
    progress: bool,
) -> anndata.AnnData | None:  # fmt: skip
    """:func:`predict` block by block (:mod:`diffst.inference.streamed`)."""
    from diffst.config import remove_stale_temporaries
    from diffst.inference.streamed import finish_h5ad, run_streamed

    genes = [str(x) for x in bundle.store_meta["genes"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent, rf"\.{re.escape(out.name)}\.(?P<pid>\d+)\.tmp")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with _TileBar(progress and env.is_main) as bar:
            result = run_streamed(bundle, ctx, cfg, env, tmp, genes, on_progress=bar)
        if result is None:
            return None
        metadata = _metadata(cfg, bundle, sample, ctx, result.n_tiles, result.stride)
        metadata["spot_consistency"] = result.report
        metadata["streamed"] = result.to_dict()
        frame = _frame(
            result.rows, result.cols, ctx, sample, cfg, metadata, library_id,
            gene_table(
                genes, sample, ctx.inputs.spots[1], None, result.report, ctx.measured_genes,
                sums=(result.predicted_counts, result.mean_std),
            ),
        )  # fmt: skip
        adata = finish_h5ad(result, frame, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info(
        "streamed prediction: %d bins × %d genes in %d blocks written to %s",
        adata.n_obs, adata.n_vars, len(result.blocks), out,
    )  # fmt: skip
    if figures_dir is not None:
        paths = _write_figures(Path(figures_dir), cfg, adata, ctx, out)
        log.info("wrote %d figure(s) to %s", len(paths), figures_dir)
    return adata


def _frame(
    rows: np.ndarray, cols: np.ndarray, ctx: TileContext, sample: SpatialSample,
    cfg: PredictConfig, metadata: dict[str, Any], library_id: str | None, var: dict[str, Any],
) -> anndata.AnnData:  # fmt: skip
    """``obs``, ``var``, ``obsm`` and ``uns`` of the bins ``rows, cols`` (in that order)."""
    from diffst.inference.to_anndata import anndata_frame

    image, centres, frame = ctx.image, None, ctx.subspots
    if frame is not None:  # sub-spots: placed on the real lattice, the image in its own frame
        image, centres = frame.image, frame.centres_um(rows, cols)
    adata = anndata_frame(
        rows, cols, ctx.inputs.geometry, [str(x) for x in metadata["genes"]], image=image,
        library_id=library_id or sample.name, metadata=metadata,
        hires_max_px=cfg.hires_max_px, fullres_um_per_px=_fullres_um_per_px(sample), var=var,
        centres_um=centres,
    )  # fmt: skip
    if frame is not None:
        _subspot_obs(adata, frame)
    return adata


def write_prediction(
    maps: Any,
    checkpoint: str | os.PathLike[str],
    sample: SpatialSample,
    out_path: str | os.PathLike[str],
    cfg: PredictConfig | None = None,
    *,
    library_id: str | None = None,
    overwrite: bool = False,
    calibration: Any = None,
) -> anndata.AnnData:
    """Write maps made by :func:`diffst.inference.maps.predict_maps` as :func:`predict` would.

    Parameters
    ----------
    maps
        :class:`~diffst.inference.maps.SectionMaps` of a whole section (``region=None``).
    checkpoint, sample, cfg
        What the maps were predicted with (recorded in ``uns['diffst']``).
    calibration
        A :class:`~diffst.evaluation.calibration.ConformalCalibration`: ``q05``/``q95`` become its
        calibrated interval, recorded in ``uns['diffst']['interval_calibration']``.
    """
    from diffst.inference.tiled import tile_stride
    from diffst.runs.checkpoint import load_for_inference

    cfg = cfg or PredictConfig()
    out = check_output_path(out_path, overwrite=overwrite, spatialdata=cfg.write_spatialdata)
    bundle = load_for_inference(checkpoint, "cpu")
    stride = tile_stride(maps.ctx.patch, cfg.overlap_bins, maps.ctx.inputs.geometry.factor)
    metadata = _metadata(cfg, bundle, sample, maps.ctx, maps.n_tiles, stride)
    return _write_outputs(
        maps.stats.copy(), maps.covered, maps.ctx, sample, cfg, metadata, out, library_id,
        calibration,
    )  # fmt: skip


class _TileBar:
    """A rich progress bar over the tiles, started on the first report (``run_tiles``)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]predict tiles"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(),
            )  # fmt: skip
            self._progress.start()
            self._task = self._progress.add_task("tiles", total=total)
        self._progress.update(self._task, completed=done, total=total)

    def __enter__(self) -> _TileBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def _subspot_obs(adata: anndata.AnnData, frame: Any) -> None:
    """Sub-spot columns of ``obs``: the spot each sub-spot splits (``spot``: barcode, ``spot_row``
    / ``spot_col``: its spot-grid cell) and its place inside it (``sub_row`` / ``sub_col``)."""
    rows = adata.obs["bin_row"].to_numpy()
    cols = adata.obs["bin_col"].to_numpy()
    k = frame.factor
    parent = frame.parent_spots(rows, cols)
    ids = frame.spot_ids
    adata.obs["spot"] = [ids[i] if 0 <= i < len(ids) else f"spot_{i}" for i in parent]
    adata.obs["spot_row"], adata.obs["spot_col"] = rows // k, cols // k
    adata.obs["sub_row"], adata.obs["sub_col"] = rows % k, cols % k
    obs = adata.obs
    adata.obs_names = [
        f"{s}_{i}_{j}" for s, i, j in zip(obs["spot"], obs["sub_row"], obs["sub_col"], strict=True)
    ]


def _write_outputs(
    stats: np.ndarray, covered: np.ndarray, ctx: TileContext, sample: SpatialSample,
    cfg: PredictConfig, metadata: dict[str, Any], out: Path, library_id: str | None,
    calibration: Any = None,
) -> anndata.AnnData:  # fmt: skip
    """Compare the stitched statistics ``[5, G, H, W]`` with the spots (project when asked),
    apply an interval calibration when given, write the h5ad (and zarr)."""
    from diffst.inference.to_anndata import (
        LAYER_STATS,
        uncertainty_subset,
        write_h5ad_atomic,
        write_spatialdata_atomic,
    )
    from diffst.inference.uncertainty import Stat

    genes = [str(x) for x in metadata["genes"]]
    tissue = ctx.inputs.tissue & covered
    stats, report = spot_report(
        stats, tissue, ctx.inputs, genes, cfg.project_to_spots, ctx.measured_genes
    )
    metadata["spot_consistency"] = report
    if calibration is not None:
        stats[Stat.Q05], stats[Stat.Q95] = calibration.apply(
            stats[Stat.Q05], stats[Stat.Q95], stats[Stat.STD]
        )
        metadata["quantiles"] = (
            f"{calibration.level:.0%} intervals: the most central tile's 5–95 % sample "
            f"quantiles widened per gene by split-conformal calibration ({calibration.source})"
        )
        metadata["interval_calibration"] = calibration.to_dict()
    rows, cols = np.nonzero(tissue)
    var = gene_table(
        genes, sample, ctx.inputs.spots[1], stats[:, :, tissue], report, ctx.measured_genes
    )
    adata = _frame(rows, cols, ctx, sample, cfg, metadata, library_id, var)  # as streamed
    adata.X = stats[Stat.MEAN][:, rows, cols].T.astype(np.float32)
    for key, stat in LAYER_STATS.items():
        adata.layers[key] = stats[stat][:, rows, cols].T.astype(np.float32)
    if cfg.uncertainty_genes is not None:
        uncertainty_subset(adata, cfg.uncertainty_genes)
    write_h5ad_atomic(adata, out)
    if cfg.write_spatialdata:
        write_spatialdata_atomic(adata, out)
    return adata
