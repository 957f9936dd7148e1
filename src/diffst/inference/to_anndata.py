"""Predicted section → AnnData that scanpy and squidpy plot directly.

Layout (one observation per HR bin inside tissue, row-major over the section grid):

* ``X``: the point prediction, float32, counts per HR bin: the estimate of the posterior mean named
  in ``uns['diffst']['mean_estimator']`` (``samples``: mean of the K samples; ``denoiser``: the
  network's posterior mean on the log scale, mapped back to counts);
  ``layers['sample_mean' | 'std' | 'q05' | 'q95']``: mean, standard deviation and 5 % / 95 %
  quantiles of the K samples, same unit;
* ``var_names``: genes of the checkpoint; ``var`` columns (when the caller knows them):
  ``gene_ids`` / ``gene_symbols`` (the section's other gene identifier), ``feature_types``,
  ``in_section`` (False for checkpoint genes the section lacks) and ``lr_source`` (``measured``,
  or ``imputed`` from co-expressed genes for those; ``uns['diffst']['missing_genes']``),
  ``lr_counts`` (counts of the gene in the section's LR input), ``predicted_counts`` (Σ ``X``),
  ``mean_std`` (mean of ``layers['std']``) and ``spot_pcc`` (PCC across spots of the
  re-aggregated prediction with the measured spots);
* ``obs``: ``bin_row``, ``bin_col`` (HR grid indices), ``x_um``, ``y_um`` (bin centre, µm);
* ``obsm['spatial']``: bin centres in full-resolution image pixels ``(col, row)`` through the
  image's :class:`~diffst.geometry.AffineTransform` (µm when the sample has no image);
* ``uns['spatial'][library]``: ``images['hires']`` and ``images['lowres']`` (downsampled
  copies, longest side at most ``hires_max_px`` / ``lowres_max_px``, uint8 RGB ``[h, w, 3]``;
  fluorescence drawn as grey or false colour) and ``scalefactors`` (``tissue_hires_scalef``
  and ``tissue_lowres_scalef``, each image's px per full-res px; ``spot_diameter_fullres`` =
  HR bin side in full-res px, ``fiducial_diameter_fullres``), the layout of
  ``scanpy.read_visium``;
* ``uns['diffst']``: run metadata (config, checkpoint sha256, sampler, steps, seed, n_samples,
  geometry, spot consistency, ``uncertainty``: which genes have sample statistics and where).

With ``PredictConfig.uncertainty_genes`` set, the sample statistics of those genes only are
written, as ``obsm['std' | 'q05' | 'q95' | 'sample_mean']`` DataFrames (index ``obs_names``,
one column per chosen gene), and there are no layers (:func:`uncertainty_subset`).

A streamed prediction (:mod:`diffst.inference.streamed`) writes the same layout block by block;
its observations are ordered block by block (row-major inside each block) and
``uns['diffst']['streamed']`` records the blocks. :func:`read_prediction` reads a chosen set of
genes of any prediction file into memory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from diffst.inference.uncertainty import Stat
from diffst.keys import AnnDataKey

if TYPE_CHECKING:
    import anndata

    from diffst.geometry import AffineTransform
    from diffst.io.sample import SpatialImage

__all__ = [
    "GridLike",
    "anndata_frame",
    "bin_centres_um",
    "build_anndata",
    "hires_image",
    "read_prediction",
    "spatial_images",
    "uncertainty_entry",
    "uncertainty_subset",
    "write_h5ad_atomic",
    "write_spatialdata_atomic",
]


class GridLike(Protocol):
    """The parts of :class:`diffst.sections.binning.GridGeometry` used here."""

    @property
    def origin_um(self) -> tuple[float, float]: ...  # (x0, y0) of bin (0, 0)'s corner, µm

    @property
    def hr_um(self) -> float: ...  # bin side, µm

    @property
    def shape_hr(self) -> tuple[int, int]: ...  # (H, W) bins


def bin_centres_um(geometry: GridLike, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``[n, 2]`` centres ``(x, y)`` in µm of HR bins ``(rows[k], cols[k])``."""
    x0, y0 = geometry.origin_um
    x = x0 + (np.asarray(cols, dtype=np.float64) + 0.5) * geometry.hr_um
    y = y0 + (np.asarray(rows, dtype=np.float64) + 0.5) * geometry.hr_um
    return np.stack([x, y], axis=1)


def _to_unit_float(pixels: np.ndarray, fluorescence: bool) -> np.ndarray:
    """Image ``[h, w, C]`` → float32 in [0, 1] (fluorescence: per-channel 99.5th percentile)."""
    img = pixels.astype(np.float32)
    if fluorescence:
        hi = np.percentile(img.reshape(-1, img.shape[2]), 99.5, axis=0)
        return np.clip(img / np.maximum(hi, 1e-6), 0.0, 1.0)
    if np.issubdtype(pixels.dtype, np.integer):
        return np.clip(img / float(np.iinfo(pixels.dtype).max), 0.0, 1.0)
    return np.clip(img / max(float(img.max()), 1e-6), 0.0, 1.0)


def hires_image(image: SpatialImage, max_px: int) -> tuple[np.ndarray, float]:
    """Downsampled RGB copy of ``image`` for ``uns['spatial']``.

    Parameters
    ----------
    image
        The section image (``[H, W, C]`` pixels, possibly lazy).
    max_px
        Longest side of the result, px.

    Returns
    -------
    (np.ndarray, float)
        ``[h, w, 3]`` float32 RGB in [0, 1] and the scale factor (result px per full-res px).
        Fluorescence images become grey (1 channel) or false colour (channels → blue, green,
        red in order).
    """
    h, w = image.shape_hw
    step = max(1, int(np.ceil(max(h, w) / max_px)))
    small = np.asarray(image.pixels[::step, ::step, :])
    unit = _to_unit_float(small, fluorescence=image.kind == "fluorescence")
    c = unit.shape[2]
    if image.kind != "fluorescence" and c >= 3:
        rgb = unit[..., :3]
    elif c == 1:
        rgb = np.repeat(unit, 3, axis=2)
    else:
        rgb = np.zeros((*unit.shape[:2], 3), dtype=np.float32)
        for k in range(min(c, 3)):
            rgb[..., 2 - k] = unit[..., k]
    return np.ascontiguousarray(rgb, dtype=np.float32), 1.0 / step


def spatial_images(
    image: SpatialImage, hires_max_px: int, lowres_max_px: int
) -> dict[str, tuple[np.ndarray, float]]:
    """``{"hires": (rgb, scalef), "lowres": (rgb, scalef)}`` for ``uns['spatial']``.

    Each ``rgb`` is ``[h, w, 3]`` uint8 (:func:`hires_image` at that size, scaled to 0..255)
    and ``scalef`` its px per image px.
    """
    out = {}
    for name, max_px in (("hires", hires_max_px), ("lowres", lowres_max_px)):
        rgb, scalef = hires_image(image, max_px)
        out[name] = (np.round(rgb * 255.0).astype(np.uint8), scalef)
    return out


def _fullres_frame(
    image: SpatialImage, fullres_um_per_px: float | None
) -> tuple[AffineTransform, float]:
    """Full-resolution pixel frame and image px per full-res px (image frame when unknown)."""
    from diffst.geometry import AffineTransform

    if fullres_um_per_px:
        fullres = AffineTransform.from_pixel_size(float(fullres_um_per_px))
        ratio = image.um_to_px.matrix[0, 0] / fullres.matrix[0, 0]
        if np.allclose(image.um_to_px.matrix, fullres.scaled(ratio).matrix, rtol=1e-6, atol=1e-6):
            return fullres, float(ratio)
    return image.um_to_px, 1.0


def _h5ad_safe(value: Any) -> Any:
    """Make nested metadata writable to h5ad: drop ``None``, tuples → lists, paths → str."""
    if isinstance(value, dict):
        return {str(k): _h5ad_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        items = [_h5ad_safe(v) for v in value if v is not None]
        if items and all(isinstance(v, str) for v in items):
            return np.asarray(items, dtype=object)
        return items if any(isinstance(v, dict) for v in items) else np.asarray(items)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def build_anndata(
    stats: np.ndarray,
    tissue: np.ndarray,
    geometry: GridLike,
    genes: tuple[str, ...] | list[str],
    *,
    image: SpatialImage | None,
    library_id: str,
    metadata: dict[str, Any],
    hires_max_px: int = 2000,
    fullres_um_per_px: float | None = None,
    lowres_max_px: int = 600,
    var: dict[str, Any] | None = None,
    centres_um: np.ndarray | None = None,
) -> anndata.AnnData:
    """Assemble the output AnnData (layout in the module docstring).

    Parameters
    ----------
    stats
        ``[5, G, H, W]`` point estimate/std/q05/q95/sample mean (axis 0 as
        :class:`~diffst.inference.uncertainty.Stat`), counts per HR bin.
    tissue
        ``[H, W]`` bool, bins written as observations.
    geometry, genes, image, library_id, metadata, hires_max_px, fullres_um_per_px,
    lowres_max_px, var, centres_um
        As :func:`anndata_frame`.
    """
    rows, cols = np.nonzero(tissue)
    adata = anndata_frame(
        rows, cols, geometry, genes, image=image, library_id=library_id, metadata=metadata,
        hires_max_px=hires_max_px, fullres_um_per_px=fullres_um_per_px,
        lowres_max_px=lowres_max_px, var=var, centres_um=centres_um,
    )  # fmt: skip
    adata.X = stats[Stat.MEAN][:, rows, cols].T.astype(np.float32)
    for key, stat in LAYER_STATS.items():
        adata.layers[key] = stats[stat][:, rows, cols].T.astype(np.float32)
    return adata


LAYER_STATS = {
    AnnDataKey.STD.value: Stat.STD,
    AnnDataKey.Q05.value: Stat.Q05,
    AnnDataKey.Q95.value: Stat.Q95,
    AnnDataKey.SAMPLE_MEAN.value: Stat.SAMPLE_MEAN,
}
"""``layers`` key → the statistic it holds (``X`` holds :attr:`Stat.MEAN`)."""


def uncertainty_entry(genes: tuple[str, ...] | list[str] | None) -> dict[str, Any]:
    """``uns['diffst']['uncertainty']`` for ``PredictConfig.uncertainty_genes``."""
    if genes is None:
        return {"genes": "all", "stored_in": "layers", "statistics": list(LAYER_STATS)}
    return {"genes": [str(g) for g in genes], "stored_in": "obsm", "statistics": list(LAYER_STATS)}


def uncertainty_subset(adata: anndata.AnnData, genes: tuple[str, ...] | list[str]) -> None:
    """Keep the sample statistics of ``genes`` only: each layer becomes an ``obsm`` DataFrame
    of those genes' columns (index ``obs_names``), and the layers are dropped (in place)."""
    import pandas as pd

    names = list(adata.var_names)
    index = [names.index(g) for g in genes]
    if "mean_std" in adata.var:  # the mean std of the genes without statistics is not known
        adata.var["mean_std"] = np.where(adata.var_names.isin(list(genes)), adata.var["mean_std"],
                                         np.nan)  # fmt: skip
    for key in LAYER_STATS:
        if key not in adata.layers:
            continue
        if index:
            values = np.asarray(adata.layers[key])[:, index]
            adata.obsm[key] = pd.DataFrame(values, index=adata.obs_names, columns=list(genes))
        del adata.layers[key]


def anndata_frame(
    rows: np.ndarray,
    cols: np.ndarray,
    geometry: GridLike,
    genes: tuple[str, ...] | list[str],
    *,
    image: SpatialImage | None,
    library_id: str,
    metadata: dict[str, Any],
    hires_max_px: int = 2000,
    fullres_um_per_px: float | None = None,
    lowres_max_px: int = 600,
    var: dict[str, Any] | None = None,
    centres_um: np.ndarray | None = None,
) -> anndata.AnnData:
    """The output AnnData without ``X`` and layers: ``obs``, ``var``, ``obsm`` and ``uns``.

    Parameters
    ----------
    rows, cols
        ``[n]`` HR grid indices of the bins written as observations, in their order.
    geometry
        Section grid (origin µm, bin side µm, shape).
    genes
        ``G`` gene names.
    image
        Section image, or ``None`` (then ``obsm['spatial']`` is in µm and no image is stored).
    library_id
        Key under ``uns['spatial']``.
    metadata
        Stored (made h5ad-safe) as ``uns['diffst']``.
    hires_max_px, lowres_max_px
        Longest side of the stored hires and lowres images, px.
    var
        Per-gene columns of ``var`` (each of length ``G``).
    fullres_um_per_px
        Pixel size of the platform's full-resolution frame when ``image`` is a downsampled copy
        of it (Space Ranger hires/lowres images); ``obsm['spatial']`` then uses that frame and the
        scale factors map it to the stored image. Ignored unless the image's transform is an
        axis-aligned scaling of that frame.
    centres_um
        ``[n, 2]`` centres ``(x, y)`` µm of the ``n`` bins (in ``rows, cols`` order), when the
        bins do not sit on ``geometry`` in the sample frame (sub-spots of a spot lattice);
        default: the bin centres of ``geometry``.
    """
    import anndata
    import pandas as pd

    rows, cols = np.asarray(rows), np.asarray(cols)
    centres = bin_centres_um(geometry, rows, cols) if centres_um is None else centres_um
    if centres.shape != (rows.size, 2):
        raise ValueError(f"centres_um must be [{rows.size}, 2], got {centres.shape}")
    obs = pd.DataFrame(
        {
            "bin_row": rows.astype(np.int64),
            "bin_col": cols.astype(np.int64),
            "x_um": centres[:, 0],
            "y_um": centres[:, 1],
        },
        index=[f"bin_{r}_{c}" for r, c in zip(rows, cols, strict=True)],
    )
    adata = anndata.AnnData(
        obs=obs,
        var=pd.DataFrame(var or {}, index=pd.Index([str(g) for g in genes], name="gene")),
    )
    library: dict[str, Any] = {"metadata": {"source": "diffst predict"}}
    if image is not None:
        frame, image_per_frame_px = _fullres_frame(image, fullres_um_per_px)
        adata.obsm[AnnDataKey.SPATIAL.value] = frame.apply(centres)
        images = spatial_images(image, hires_max_px, min(lowres_max_px, hires_max_px))
        library["images"] = {name: rgb for name, (rgb, _) in images.items()}
        scalef = {name: s * image_per_frame_px for name, (_, s) in images.items()}
        bin_px = geometry.hr_um / float(np.mean(frame.um_per_px()))
    else:
        adata.obsm[AnnDataKey.SPATIAL.value] = centres
        scalef, bin_px = {"hires": 1.0, "lowres": 1.0}, geometry.hr_um
    library["scalefactors"] = {
        "tissue_hires_scalef": float(scalef["hires"]),
        "tissue_lowres_scalef": float(scalef["lowres"]),
        "spot_diameter_fullres": float(bin_px),
        "fiducial_diameter_fullres": float(bin_px),
    }
    adata.uns["spatial"] = {library_id: library}
    meta = dict(metadata)
    meta["spatial_units"] = "px" if image is not None else "um"
    adata.uns[AnnDataKey.UNS.value] = _h5ad_safe(meta)
    return adata


def write_h5ad_atomic(adata: anndata.AnnData, path: str | os.PathLike[str]) -> Path:
    """Write ``adata`` to ``path`` via a temporary file in the same folder and ``os.replace``
    (missing parent folders are created).

    A failure at any point leaves no file at ``path`` (and no temporary file behind); the
    temporaries of earlier writers that were killed (``.<name>.<pid>.tmp``) are removed.
    """
    from diffst.config import remove_stale_temporaries

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, rf"\.{re.escape(path.name)}\.(?P<pid>\d+)\.tmp")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_spatialdata_atomic(adata: anndata.AnnData, path: Path) -> Path:
    """``<out>.zarr`` SpatialData holding the table (only called when spatialdata exists)."""
    import shutil

    import spatialdata

    target = path.with_suffix(".zarr")
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.zarr")  # writers want .zarr
    try:
        sdata = spatialdata.SpatialData(tables={"table": adata})
        sdata.write(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_prediction(
    path: str | os.PathLike[str],
    genes: list[str] | tuple[str, ...] | None = None,
    *,
    layers: bool = True,
) -> anndata.AnnData:
    """Read a prediction h5ad, or only some of its genes, into memory.

    For a streamed whole-panel prediction (:mod:`diffst.inference.streamed`), whose ``X`` and
    layers may not fit in memory, this reads just the columns of ``genes`` from the file.

    Parameters
    ----------
    path
        ``.h5ad`` written by ``diffst predict``.
    genes
        Genes to read (``var_names``), in the order wanted; ``None`` reads them all.
    layers
        Also read ``layers`` (``std``, ``q05``, ``q95``, ``sample_mean``) for those genes.

    Raises
    ------
    KeyError
        A gene is not in the file (the message names the file and the genes).
    """
    import anndata
    import h5py
    from anndata.io import read_elem

    path = Path(path)
    with h5py.File(path, "r") as f:
        var = read_elem(f["var"])
        names = [str(g) for g in var.index]
        if genes is None:
            index = np.arange(len(names))
        else:
            where = {g: k for k, g in enumerate(names)}
            missing = [g for g in genes if g not in where]
            if missing:
                raise KeyError(f"{path}: field var_names lacks {missing}")
            index = np.asarray([where[g] for g in genes], dtype=np.int64)
        order = np.argsort(index, kind="stable")
        wanted = index[order]  # h5py reads increasing column indices
        back = np.empty_like(order)
        back[order] = np.arange(len(order))

        def columns(ds: Any) -> np.ndarray:
            if len(wanted) == ds.shape[1] and np.array_equal(wanted, np.arange(ds.shape[1])):
                return np.asarray(ds[...])
            if len(wanted) == 0:
                return np.zeros((ds.shape[0], 0), dtype=ds.dtype)
            unique, inverse = np.unique(wanted, return_inverse=True)
            return np.asarray(ds[:, unique])[:, inverse][:, back]

        x = columns(f["X"]) if "X" in f else None
        lay = {}
        if layers and "layers" in f:
            lay = {key: columns(ds) for key, ds in f["layers"].items()}
        obs = read_elem(f["obs"])
        obsm = read_elem(f["obsm"]) if "obsm" in f else {}
        uns = read_elem(f["uns"]) if "uns" in f else {}
    adata = anndata.AnnData(X=x, obs=obs, var=var.iloc[index], layers=lay or None, uns=uns)
    for key, value in obsm.items():
        adata.obsm[key] = value
    return adata
