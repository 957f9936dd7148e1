"""AnnData ``.h5ad`` reader (scanpy / squidpy spatial convention)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from diffst.geometry import AffineTransform
from diffst.io._constants import AnnDataKey, Platform, ScaleFactor, control_mask
from diffst.io.checks import Extent, check_axes, check_counts, check_pixel_size, require_file
from diffst.io.images import read_image
from diffst.io.sample import InputError, SpatialImage, SpatialSample, SpotTable
from diffst.io.visium import VISIUM_CAPTURE_UM, VISIUM_SPOT_UM

__all__ = ["read_h5ad"]

_SCALEF = {"hires": ScaleFactor.HIRES, "lowres": ScaleFactor.LOWRES}


def _library(adata: Any, library: str | None, path: Path) -> dict[str, Any]:
    """``uns['spatial'][library]`` (the only library when ``library`` is None); {} if absent."""
    libs = adata.uns.get(AnnDataKey.SPATIAL, {})
    if not libs:
        if library is not None:
            raise InputError(f"{path}: uns['spatial'] is missing, so library {library!r} is absent")
        return {}
    if library is None:
        if len(libs) > 1:
            raise InputError(
                f"{path}: uns['spatial'] holds several libraries {sorted(libs)}; pass library="
            )
        library = next(iter(libs))
    if library not in libs:
        raise InputError(f"{path}: library {library!r} not in uns['spatial'] ({sorted(libs)})")
    return dict(libs[library]) | {"_name": library}


def _coordinates(
    adata: Any, path: Path, spatial_key: str, obs_xy: tuple[str, str] | None, swap_xy: bool
) -> tuple[np.ndarray, tuple[str, str]]:
    """Full-res pixel coordinates ``[n, 2]`` (col, row) and the names of their fields."""
    if obs_xy is not None:
        missing = [c for c in obs_xy if c not in adata.obs.columns]
        if missing:
            raise InputError(f"{path}: obs lacks column(s) {missing}")
        xy = adata.obs[list(obs_xy)].to_numpy(np.float64)
        fields = (f"obs['{obs_xy[0]}']", f"obs['{obs_xy[1]}']")
    else:
        if spatial_key not in adata.obsm:
            raise InputError(
                f"{path}: obsm[{spatial_key!r}] missing (obsm keys: {sorted(adata.obsm)}); "
                "pass spatial_key= or obs_xy=(x_column, y_column)"
            )
        xy = np.asarray(adata.obsm[spatial_key], dtype=np.float64)[:, :2]
        fields = (f"obsm['{spatial_key}'][:, 0]", f"obsm['{spatial_key}'][:, 1]")
    if not np.all(np.isfinite(xy)):
        raise InputError(f"{path}: fields {fields[0]}/{fields[1]} contain NaN")
    return (xy[:, ::-1].copy(), fields[::-1]) if swap_xy else (xy, fields)


def _pixel_size(lib: dict[str, Any], um_per_px: float | None, path: Path) -> float:
    """µm per full-res pixel: stated by the caller and/or 65 µm / spot_diameter_fullres."""
    sf = lib.get(AnnDataKey.SCALEFACTORS, {})
    field = f"uns['spatial']['{lib.get('_name')}']['scalefactors']['{ScaleFactor.SPOT_DIAMETER}']"
    derived = None
    if ScaleFactor.SPOT_DIAMETER in sf:
        derived = VISIUM_SPOT_UM / float(sf[ScaleFactor.SPOT_DIAMETER])
    if um_per_px is None:
        if derived is None:
            raise InputError(
                f"{path}: the pixel size is not stated (no {field}); pass um_per_px explicitly"
            )
        return derived
    if derived is not None:
        check_pixel_size(um_per_px, derived, file=path, field="um_per_px", source=field)
    return float(um_per_px)


def _stored_image(lib: dict[str, Any], which: str, path: Path) -> tuple[np.ndarray, float]:
    """``uns['spatial'][lib]['images'][which]`` as uint8 and its scale factor."""
    images = lib.get(AnnDataKey.IMAGES, {})
    sf = lib.get(AnnDataKey.SCALEFACTORS, {})
    field = f"uns['spatial']['{lib.get('_name')}']['images']['{which}']"
    if which not in images or _SCALEF[which] not in sf:
        raise InputError(f"{path}: {field} or its scale factor {_SCALEF[which]} is missing")
    img = np.asarray(images[which])
    if img.ndim == 2:
        img = img[..., None]
    if img.dtype.kind == "f":
        lo, hi = float(img.min()), float(img.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError(
                f"{path}: {field} is not an image (float values span [{lo:.2f}, {hi:.2f}], "
                "outside [0, 1]); use another image (e.g. 'lowres' or a full-resolution file)"
            )
        img = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return img[..., :3], float(sf[_SCALEF[which]])


def _image(
    lib: dict[str, Any], image: str | Path, fullres: AffineTransform, path: Path
) -> SpatialImage:
    """The stored hires/lowres image (transform composed with its scale) or a full-res file."""
    if image in ("hires", "lowres"):
        pixels, scalef = _stored_image(lib, str(image), path)
        channels = ("R", "G", "B")[: pixels.shape[2]]
        return SpatialImage(pixels, channels, fullres.scaled(scalef))
    file = Path(image)
    full = read_image(file, what="full-resolution image")
    n = full.shape[2]
    channels = ("R", "G", "B") if n == 3 else tuple(f"c{i}" for i in range(n))
    return SpatialImage(full, channels, fullres, path=file)


def _nn_pitch_um(centers_um: np.ndarray) -> float | None:
    """Median nearest-neighbour distance of the spots (µm)."""
    if len(centers_um) < 3:
        return None
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(centers_um).query(centers_um, k=2)
    return float(np.median(dist[:, 1]))


def read_h5ad(
    path: Path | str,
    *,
    library: str | None = None,
    spatial_key: str = "spatial",
    obs_xy: tuple[str, str] | None = None,
    um_per_px: float | None = None,
    image: Literal["hires", "lowres"] | Path | str | None = "hires",
    swap_xy: bool = False,
    layer: str | None = None,
    spot_diameter_um: float | None = None,
) -> SpatialSample:
    """Read a spatial AnnData file (scanpy/squidpy convention) as spots.

    Files read
    ----------
    * the ``.h5ad``: ``X`` (or ``layers[layer]``), ``var`` (``gene_ids`` if present),
      ``obsm[spatial_key]`` = ``[x = column, y = row]`` in full-resolution image pixels (or two
      ``obs`` columns given by ``obs_xy``), ``uns['spatial'][library]`` (``scalefactors``,
      ``images``);
    * optionally a full-resolution image file (``image`` = path).

    µm per full-res pixel is 65 / ``spot_diameter_fullres`` when scale factors exist (Visium;
    spots are then 55 µm capture circles unless ``spot_diameter_um`` says otherwise), else
    ``um_per_px`` must be given (both given: they must agree within 5%). Non-integer values
    mark the matrix as not raw counts (``SpotTable.is_raw_counts = False``). Coordinates
    that fit the image only with x and y exchanged raise an error suggesting ``swap_xy=True``.
    """
    import anndata

    path = require_file(Path(path), "AnnData file")
    try:
        adata = anndata.read_h5ad(path)
    except (OSError, KeyError, ValueError) as err:
        raise InputError(f"{path}: not a readable .h5ad file: {err}") from err
    lib = _library(adata, library, path)
    scale = _pixel_size(lib, um_per_px, path)
    xy_px, fields = _coordinates(adata, path, spatial_key, obs_xy, swap_xy)
    counts = sp.csr_matrix(adata.layers[layer] if layer is not None else adata.X, dtype=np.float64)
    field = f"layers['{layer}']" if layer is not None else "X"
    is_int = check_counts(counts.data, file=path, field=field, require_integer=False)
    sf = lib.get(AnnDataKey.SCALEFACTORS, {})
    if spot_diameter_um is None:
        if ScaleFactor.SPOT_DIAMETER not in sf:
            raise InputError(
                f"{path}: no spot diameter in the scale factors; pass spot_diameter_um"
            )
        spot_diameter_um = VISIUM_CAPTURE_UM
    genes = tuple(str(g) for g in adata.var_names)
    ids = adata.var[AnnDataKey.GENE_IDS] if AnnDataKey.GENE_IDS in adata.var else None
    centers = xy_px * scale
    spots = SpotTable(
        counts=counts,
        genes=genes,
        centers_um=centers,
        diameter_um=spot_diameter_um,
        ids=tuple(str(o) for o in adata.obs_names),
        pitch_um=_nn_pitch_um(centers),
        is_raw_counts=is_int,
        gene_ids=() if ids is None else tuple(str(i) for i in ids),
        control=control_mask(genes),
        path=path,
    )
    fullres = AffineTransform.from_pixel_size(scale)
    files = {"h5ad": path}
    spatial_image = None
    if image is not None:
        spatial_image = _image(lib, image, fullres, path)
        extent = Extent()
        extent.update(spatial_image.um_to_px.apply(centers))
        check_axes(
            extent,
            spatial_image.shape_hw,
            file=path,
            fields=fields,
            image=spatial_image.path or f"uns['spatial'] {image} image",
        )
        if spatial_image.path is not None:
            files["image"] = spatial_image.path
    return SpatialSample(
        name=str(lib.get("_name", path.stem)),
        platform=Platform.H5AD,
        image=spatial_image,
        spots=spots,
        source_files=files,
        metadata={"um_per_px_fullres": scale, "swap_xy": swap_xy},
    )
