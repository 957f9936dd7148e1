"""Per-cell expression from a super-resolved section: ``diffst predict --cells FILE``.

Each cell takes the expected counts of the HR bins it covers, weighted by the share of each bin's
area inside the cell (bins are supersampled ``SUPERSAMPLE × SUPERSAMPLE`` times), so a cell's
counts are the integral of the predicted density over its footprint.

Cell footprints come from

* a **label image** (``.tif``/``.tiff``/``.png``; integer labels, 0 = background) on the pixel
  grid of the section's image (full resolution, the frame of ``obsm['spatial']``), as cellpose
  or StarDist write them;
* **GeoJSON** polygons (``.geojson``/``.json``; ``Polygon``/``MultiPolygon`` features) in the
  section image's full-resolution pixels, as QuPath exports them; the cell id is the feature's
  ``id``, else ``properties.name``/``cell_id``/``object_id``, else its index;
* a **vertex table** (``.parquet``/``.csv``/``.csv.gz``) in µm of the section frame, one row per
  polygon vertex, as Xenium's ``cell_boundaries.parquet`` (``cell_id``, ``vertex_x``,
  ``vertex_y``) or a MERFISH-style table (``poly_ID`` or ``EntityID``, ``x``, ``y``).

Uncertainty per cell: ``layers['std']`` is the square root of the weighted sum of the bins'
variances (bins treated as independent, which understates the spread where neighbouring bins'
errors are correlated) and ``q05``/``q95`` the normal interval ``X ∓ 1.645·std`` clipped at 0.
They are approximations, recorded as such in ``uns['diffst_cells']``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from diffst.io.sample import InputError

if TYPE_CHECKING:
    import anndata

    from diffst.geometry import AffineTransform

__all__ = [
    "SUPERSAMPLE",
    "CellShapes",
    "cell_weights",
    "cells_anndata",
    "cells_path_for",
    "read_cells",
    "write_cells",
]

#: sub-points per bin side used to measure the share of a bin inside a cell
SUPERSAMPLE = 4
_Z90 = 1.6448536269514722  # standard normal 95 % quantile
_ID_COLUMNS = ("cell_id", "poly_ID", "EntityID", "entity_id", "cell")
_X_COLUMNS = ("vertex_x", "x", "x_um", "global_x")
_Y_COLUMNS = ("vertex_y", "y", "y_um", "global_y")


@dataclass
class CellShapes:
    """Cell footprints: polygons in µm (``polygons_um``) or a label image (``labels``, with the
    µm → px transform of the image it is registered to)."""

    ids: list[str]
    source: Path
    polygons_um: list[np.ndarray] | None = None  # one [k, 2] (x, y) array per cell
    labels: np.ndarray | None = None  # [H, W] int, 0 = background
    label_values: np.ndarray | None = None  # label of each id (labels only)
    um_to_px: AffineTransform | None = None


def read_cells(path: str | os.PathLike[str], um_to_px: AffineTransform | None) -> CellShapes:
    """Read cell footprints (see the module docstring for the formats).

    Parameters
    ----------
    path
        Label image, GeoJSON or vertex table.
    um_to_px
        The section image's µm → full-resolution pixel transform; needed for label images and
        GeoJSON (their coordinates are pixels), not for vertex tables (µm).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: cell boundary file not found")
    name = p.name.lower()
    if name.endswith((".tif", ".tiff", ".png")):
        return _read_labels(p, um_to_px)
    if name.endswith((".geojson", ".json")):
        return _read_geojson(p, um_to_px)
    if name.endswith((".parquet", ".csv", ".csv.gz")):
        return _read_vertices(p)
    raise InputError(
        f"{p}: unknown cell boundary format; use a label image (.tif/.png), GeoJSON or a vertex "
        "table (.parquet/.csv with cell id, x and y in µm)"
    )


def _need_transform(p: Path, um_to_px: AffineTransform | None) -> AffineTransform:
    if um_to_px is None:
        raise InputError(
            f"{p}: coordinates are image pixels, but the section has no image to place them"
        )
    return um_to_px


def _read_labels(p: Path, um_to_px: AffineTransform | None) -> CellShapes:
    from diffst.io.images import read_image

    frame = _need_transform(p, um_to_px)
    labels = np.asarray(read_image(p, what="cell label image"))  # [H, W, 1] for one channel
    if labels.ndim == 3 and labels.shape[2] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(
            f"{p}: a label image must be one integer channel (got {labels.dtype}, shape "
            f"{labels.shape})"
        )
    values = np.unique(labels)
    values = values[values != 0]
    if values.size == 0:
        raise InputError(f"{p}: the label image holds no cell (every pixel is 0)")
    return CellShapes(
        [str(v) for v in values], p, labels=labels, label_values=values, um_to_px=frame
    )


def _read_geojson(p: Path, um_to_px: AffineTransform | None) -> CellShapes:
    frame = _need_transform(p, um_to_px)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{p}: not valid GeoJSON ({err})") from None
    features = data.get("features", [data]) if isinstance(data, dict) else data
    px_to_um = frame.inverse()
    ids, polygons = [], []
    for k, feature in enumerate(features):
        geometry = feature.get("geometry") or {}
        kind, coords = geometry.get("type"), geometry.get("coordinates") or []
        if kind == "Polygon":
            rings = [coords[0]]
        elif kind == "MultiPolygon":
            rings = [poly[0] for poly in coords]
        else:
            continue
        props = feature.get("properties") or {}
        cid = feature.get("id") or next(
            (props[key] for key in ("name", "cell_id", "object_id") if props.get(key)), k
        )
        for j, ring in enumerate(rings):
            xy_px = np.asarray(ring, dtype=np.float64)[:, :2]
            polygons.append(px_to_um.apply(xy_px))
            ids.append(str(cid) if len(rings) == 1 else f"{cid}_{j}")
    if not polygons:
        raise InputError(f"{p}: field features holds no Polygon or MultiPolygon")
    return CellShapes(ids, p, polygons_um=polygons)


def _column(names: list[str], options: tuple[str, ...], p: Path, what: str) -> str:
    found = next((c for c in options if c in names), None)
    if found is None:
        raise InputError(f"{p}: no {what} column (one of {list(options)}); columns: {names}")
    return found


def _read_vertices(p: Path) -> CellShapes:
    import pandas as pd

    try:
        table = pd.read_parquet(p) if p.name.lower().endswith(".parquet") else pd.read_csv(p)
    except Exception as err:  # truncated, not a table
        raise InputError(f"{p}: cannot read the vertex table ({err})") from None
    names = [str(c) for c in table.columns]
    cid = _column(names, _ID_COLUMNS, p, "cell id")
    xs, ys = _column(names, _X_COLUMNS, p, "x"), _column(names, _Y_COLUMNS, p, "y")
    xy = table[[xs, ys]].to_numpy(np.float64)
    if not np.isfinite(xy).all():
        raise InputError(f"{p}: fields {xs}/{ys} hold NaN or infinite coordinates")
    keys = table[cid].astype(str).to_numpy()
    order = np.argsort(keys, kind="stable")
    keys, xy = keys[order], xy[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    groups = np.split(xy, starts[1:])
    return CellShapes([str(keys[s]) for s in starts], p, polygons_um=groups)


def _bin_points(centres_um: np.ndarray, hr_um: float, s: int) -> np.ndarray:
    """``[n_bins, s², 2]`` sub-points of each bin, µm."""
    offsets = (np.arange(s) + 0.5) / s * hr_um - hr_um / 2
    ox, oy = np.meshgrid(offsets, offsets)
    grid = np.column_stack([ox.ravel(), oy.ravel()])
    return centres_um[:, None, :] + grid[None, :, :]


def cell_weights(
    cells: CellShapes, centres_um: np.ndarray, hr_um: float, supersample: int = SUPERSAMPLE
) -> sp.csr_matrix:
    """``[n_cells, n_bins]`` share of each bin's area inside each cell (rows in ``cells.ids``
    order; bins given by their centres ``[n_bins, 2]`` in µm on a grid of side ``hr_um``).

    Work and memory follow the cells' total area, not cells × bins: polygons look up the bins
    under their bounding box on the grid, label images are read block by block of bins.
    """
    centres = np.asarray(centres_um, dtype=np.float64)
    n, s2 = len(centres), supersample**2
    if cells.labels is not None:
        return _label_weights(cells, centres, hr_um, supersample)
    from matplotlib.path import Path as Polygon

    assert cells.polygons_um is not None
    lo_um = centres.min(axis=0) - hr_um / 2
    ij = np.rint((centres - lo_um) / hr_um - 0.5).astype(np.int64)  # (col, row) on the grid
    lookup = np.full((ij[:, 1].max() + 1, ij[:, 0].max() + 1), -1, np.int64)
    lookup[ij[:, 1], ij[:, 0]] = np.arange(n)
    rows, cols, vals = [], [], []
    for k, poly in enumerate(cells.polygons_um):
        if len(poly) < 3:
            continue
        c0, r0 = np.floor((poly.min(axis=0) - lo_um) / hr_um).astype(np.int64)
        c1, r1 = np.floor((poly.max(axis=0) - lo_um) / hr_um).astype(np.int64)
        c0, r0 = max(c0, 0), max(r0, 0)
        c1, r1 = min(c1, lookup.shape[1] - 1), min(r1, lookup.shape[0] - 1)
        if c1 < c0 or r1 < r0:
            continue
        near = lookup[r0 : r1 + 1, c0 : c1 + 1].ravel()
        near = near[near >= 0]
        if near.size == 0:
            continue
        sub = _bin_points(centres[near], hr_um, supersample).reshape(-1, 2)
        share = Polygon(poly).contains_points(sub).reshape(near.size, s2).mean(axis=1)
        keep = share > 0
        rows.append(np.full(keep.sum(), k))
        cols.append(near[keep])
        vals.append(share[keep])
    if not rows:
        return sp.csr_matrix((len(cells.ids), n))
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), (len(cells.ids), n)
    )


def _label_weights(
    cells: CellShapes, centres: np.ndarray, hr_um: float, supersample: int, block: int = 100_000
) -> sp.csr_matrix:
    assert cells.labels is not None and cells.um_to_px is not None
    assert cells.label_values is not None
    n, s2 = len(centres), supersample**2
    h, w = cells.labels.shape
    parts = []
    for start in range(0, n, block):
        points = _bin_points(centres[start : start + block], hr_um, supersample).reshape(-1, 2)
        col_row = np.floor(cells.um_to_px.apply(points)).astype(np.int64)
        inside = (col_row[:, 0] >= 0) & (col_row[:, 0] < w) & (col_row[:, 1] >= 0)
        inside &= col_row[:, 1] < h
        label = np.zeros(len(col_row), dtype=cells.labels.dtype)
        label[inside] = cells.labels[col_row[inside, 1], col_row[inside, 0]]
        row = np.searchsorted(cells.label_values, label)
        hit = (label != 0) & (row < len(cells.label_values))
        hit[hit] &= cells.label_values[row[hit]] == label[hit]
        bins = start + np.repeat(np.arange(len(points) // s2), s2)[hit]
        parts.append(
            sp.csr_matrix((np.full(hit.sum(), 1.0 / s2), (row[hit], bins)), (len(cells.ids), n))
        )
    weights = sp.csr_matrix((len(cells.ids), n)) if not parts else sum(parts[1:], parts[0])
    weights.sum_duplicates()
    return weights


def _dense(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def _bin_std(pred: Any) -> np.ndarray:
    """``[n_bins, G]`` std of every bin: ``layers['std']``, or — for a prediction with sample
    statistics of chosen genes only (``obsm['std']``) — those genes' columns, NaN elsewhere."""
    if "std" in pred.layers:
        return _dense(pred.layers["std"])
    std = np.full(pred.shape, np.nan, dtype=np.float32)
    have = pred.obsm.get("std")
    if have is not None:
        names = list(pred.var_names)
        for gene in have.columns:
            std[:, names.index(gene)] = np.asarray(have[gene], dtype=np.float32)
    return std


def cells_anndata(
    pred: anndata.AnnData, cells: CellShapes, *, min_covered: float = 0.5
) -> anndata.AnnData:
    """Per-cell AnnData from a ``diffst predict`` output.

    Parameters
    ----------
    pred
        The prediction (``obs`` ``x_um``/``y_um`` bin centres, ``uns['diffst']['geometry']``).
    cells
        Footprints from :func:`read_cells`.
    min_covered
        Cells with a smaller share of their area on predicted (in-tissue) bins are left out;
        the share of every kept cell is ``obs['covered_fraction']``.

    Returns
    -------
    anndata.AnnData
        ``X`` expected counts per cell; ``layers['std' | 'q05' | 'q95']`` (module docstring);
        ``obs``: ``cell_id`` (of the source), ``area_um2``, ``covered_fraction``, ``n_bins``,
        ``x_um``/``y_um`` (centroid); ``obsm['spatial']`` the centroid in the prediction's frame
        (full-resolution pixels); ``uns['spatial']`` of the prediction, so
        ``scanpy.pl.spatial`` draws the cells on the section image.
    """
    import anndata as ad
    import pandas as pd

    meta = pred.uns.get("diffst", {})
    try:
        hr_um = float(meta["geometry"]["hr_um"])
        centres = pred.obs[["x_um", "y_um"]].to_numpy(np.float64)
    except KeyError as err:
        raise InputError(f"prediction: field {err} missing (not a diffst predict output)") from None
    weights = cell_weights(cells, centres, hr_um)
    bin_area = hr_um**2
    covered_um2 = np.asarray(weights.sum(axis=1)).ravel() * bin_area
    centroid, area = _footprints(cells, weights, centres, bin_area)
    covered = np.divide(covered_um2, area, out=np.zeros_like(area), where=area > 0)
    keep = np.flatnonzero((covered >= min_covered) & (covered_um2 > 0))
    if keep.size == 0:
        raise InputError(
            f"{cells.source}: no cell has {min_covered:.0%} of its area on the predicted bins; "
            "are the boundaries in the section's frame (µm for vertex tables, full-resolution "
            "image pixels for label images and GeoJSON)?"
        )
    w = weights[keep]
    mean = w @ _dense(pred.X)
    std = np.sqrt(w.multiply(w) @ _bin_std(pred) ** 2)
    out = ad.AnnData(
        X=mean.astype(np.float32),
        obs=pd.DataFrame(
            {
                "cell_id": [cells.ids[k] for k in keep],
                "area_um2": area[keep],
                "covered_fraction": covered[keep],
                "n_bins": np.diff(w.indptr),
                "x_um": centroid[keep, 0],
                "y_um": centroid[keep, 1],
            },
            index=[f"cell_{cells.ids[k]}" for k in keep],
        ),
        var=pred.var[[]].copy(),
    )
    out.layers["std"] = std.astype(np.float32)
    out.layers["q05"] = np.maximum(mean - _Z90 * std, 0.0).astype(np.float32)
    out.layers["q95"] = (mean + _Z90 * std).astype(np.float32)
    spatial = np.asarray(pred.obsm["spatial"], dtype=np.float64)
    out.obsm["spatial"] = _to_spatial_frame(centroid[keep], centres, spatial)
    if "spatial" in pred.uns:
        out.uns["spatial"] = pred.uns["spatial"]
    out.uns["diffst_cells"] = {
        "source": str(cells.source),
        "n_cells_in_source": len(cells.ids),
        "n_cells": int(keep.size),
        "min_covered": float(min_covered),
        "supersample": SUPERSAMPLE,
        "uncertainty": "std: bins independent (sqrt of weighted variances); q05/q95: normal "
        "approximation X -/+ 1.645 std, clipped at 0",
        "prediction": {k: meta[k] for k in ("checkpoint", "checkpoint_sha256") if k in meta},
    }
    return out


def _footprints(
    cells: CellShapes, weights: sp.csr_matrix, centres: np.ndarray, bin_area: float
) -> tuple[np.ndarray, np.ndarray]:
    """Centroids ``[n, 2]`` µm and areas ``[n]`` µm² of whole cells (polygons: shoelace; labels:
    the covered bins, since the label image may extend past the section)."""
    if cells.polygons_um is not None:
        area = np.zeros(len(cells.ids))
        centroid = np.zeros((len(cells.ids), 2))
        for k, poly in enumerate(cells.polygons_um):
            x, y = poly[:, 0], poly[:, 1]
            xn, yn = np.roll(x, -1), np.roll(y, -1)
            cross = x * yn - xn * y
            a = cross.sum() / 2
            area[k] = abs(a)
            if abs(a) > 0:
                centroid[k] = [
                    ((x + xn) * cross).sum() / (6 * a),
                    ((y + yn) * cross).sum() / (6 * a),
                ]
            else:
                centroid[k] = poly.mean(axis=0)
        return centroid, area
    total = np.asarray(weights.sum(axis=1)).ravel()
    safe = np.where(total > 0, total, 1.0)
    centroid = (weights @ centres) / safe[:, None]
    return centroid, total * bin_area


def _to_spatial_frame(
    centroid_um: np.ndarray, centres_um: np.ndarray, spatial: np.ndarray
) -> np.ndarray:
    """Centroids in the frame of the prediction's ``obsm['spatial']``: the affine map fitted
    from the bins' µm centres to their spatial coordinates (exact: that map is affine)."""
    ones = np.ones((len(centres_um), 1))
    design = np.hstack([centres_um, ones])
    coef, *_ = np.linalg.lstsq(design, spatial, rcond=None)
    return np.hstack([centroid_um, np.ones((len(centroid_um), 1))]) @ coef


def cells_path_for(out_path: str | os.PathLike[str]) -> Path:
    """Default per-cell output next to the bins' ``.h5ad``: ``<stem>.cells.h5ad``."""
    out = Path(out_path)
    return out.with_name(f"{out.stem}.cells.h5ad")


def write_cells(
    pred: anndata.AnnData, cells: CellShapes, out_path: str | os.PathLike[str]
) -> anndata.AnnData:
    """:func:`cells_anndata` written atomically to ``out_path``; returns it."""
    from diffst.inference.to_anndata import write_h5ad_atomic

    adata = cells_anndata(pred, cells)
    write_h5ad_atomic(adata, out_path)
    return adata
