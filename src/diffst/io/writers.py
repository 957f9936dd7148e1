"""Writers of small, faithful platform-format files from a (synthetic) sample, for reader tests
and benchmarks. Each file is written atomically (temporary name, then ``os.replace``).

* :func:`write_merfish_outs` — Vizgen ``detected_transcripts.csv`` (µm, with an offset like a
  real experiment's global frame), ``images/mosaic_<channel>_z0.tif`` (uint16) and
  ``images/micron_to_mosaic_pixel_transform.csv``;
* :func:`write_xenium_outs` — ``transcripts.parquet`` (+ control and low-qv rows),
  ``morphology_focus.ome.tif`` (PhysicalSizeX/Y), ``experiment.xenium``, optional registered
  H&E + 10x alignment CSV;
* :func:`write_spaceranger_outs` — Visium ``outs/`` (both ``tissue_positions`` layouts);
* :func:`write_visium_hd_outs` — ``binned_outputs/square_XXXum/``;
* :func:`write_legacy_st` — counts ``.tsv.gz``, spot table ``.tsv``, H&E JPEG.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from PIL import Image
from scipy.spatial import cKDTree

from diffst.geometry import GeometryError
from diffst.io._constants import (
    H5Matrix,
    LegacyStColumn,
    MerfishColumn,
    MerfishFile,
    ScaleFactor,
    VisiumColumn,
    VisiumFile,
    XeniumColumn,
    XeniumFile,
)
from diffst.io.sample import SpatialSample

__all__ = [
    "write_legacy_st",
    "write_merfish_outs",
    "write_spaceranger_outs",
    "write_visium_hd_outs",
    "write_xenium_outs",
]

HE_FILE = "he_image.ome.tif"
HE_ALIGNMENT_FILE = "he_imagealignment.csv"
XENIUM_CONTROL_NAMES = ("NegControlCodeword_0500", "UnassignedCodeword_0001")
"""Control/unassigned codewords added to written Xenium transcripts (readers drop them)."""


def _atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Run ``write(tmp)`` then move ``tmp`` onto ``path`` (no partial file is ever visible)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _transcripts(sample: SpatialSample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All molecules of the sample: ``x_um``, ``y_um`` float64 and ``gene`` int32, each ``[n]``."""
    assert sample.transcripts is not None, "writers need a sample with transcripts"
    chunks = list(sample.transcripts.iter_chunks())
    x = np.concatenate([c.x_um for c in chunks])
    y = np.concatenate([c.y_um for c in chunks])
    return x, y, np.concatenate([c.gene for c in chunks])


def _pixel_size(sample: SpatialSample) -> float:
    """µm/px of the sample image, which must be axis-aligned with pixel (0, 0) at µm (0, 0)."""
    assert sample.image is not None, "writers need a sample with an image"
    m = sample.image.um_to_px.matrix
    if not sample.image.um_to_px.is_axis_aligned() or abs(m[0, 0] - m[1, 1]) > 1e-9 * m[0, 0]:
        raise GeometryError("writers need an axis-aligned image with square pixels")
    if np.any(np.abs(m[:2, 2]) > 1e-9):
        raise GeometryError("writers need the image origin at µm (0, 0)")
    return 1.0 / m[0, 0]


def _rgb(sample: SpatialSample) -> np.ndarray:
    """The sample image as ``[H, W, 3]`` uint8 (grey channels replicated)."""
    assert sample.image is not None
    px = np.asarray(sample.image.pixels[:, :, :])
    return px[:, :, :3] if px.shape[2] >= 3 else np.repeat(px[:, :, :1], 3, axis=2)


def _save_png(rgb: np.ndarray, path: Path, scale: float) -> None:
    h, w = rgb.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    im = Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR)
    _atomic(path, lambda tmp: im.save(tmp, format="PNG"))


def _write_10x_h5(
    path: Path, counts: sp.csr_matrix, barcodes: list[str], genes: tuple[str, ...]
) -> None:
    """10x HDF5 matrix (``matrix/``: CSC by barcode = CSR of ``[barcodes, genes]``)."""
    m = sp.csr_matrix(counts, dtype=np.int32)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            g = f.create_group(H5Matrix.GROUP)
            g[H5Matrix.DATA] = m.data
            g[H5Matrix.INDICES] = m.indices.astype(np.int64)
            g[H5Matrix.INDPTR] = m.indptr.astype(np.int64)
            g[H5Matrix.SHAPE] = np.array([m.shape[1], m.shape[0]], dtype=np.int32)
            g[H5Matrix.BARCODES] = np.array(barcodes, dtype="S")
            feats = g.create_group(H5Matrix.FEATURES)
            feats[H5Matrix.FEATURE_ID] = np.array([f"SYNG{i:011d}" for i in range(len(genes))], "S")
            feats[H5Matrix.FEATURE_NAME] = np.array(genes, dtype="S")
            feats[H5Matrix.FEATURE_TYPE] = np.array(["Gene Expression"] * len(genes), dtype="S")
            feats["genome"] = np.array(["synthetic"] * len(genes), dtype="S")

    _atomic(path, write)


def _spot_counts(
    sample: SpatialSample, centers_um: np.ndarray, radius_um: float
) -> tuple[sp.csr_matrix, tuple[str, ...]]:
    """Counts ``[n_spots, G_real]`` of molecules within ``radius_um`` of each centre."""
    x, y, gene = _transcripts(sample)
    real = ~sample.control
    dist, idx = cKDTree(centers_um).query(np.c_[x, y])
    keep = (dist <= radius_um) & real[gene]
    remap = np.cumsum(real) - 1
    mat = sp.coo_matrix(
        (np.ones(int(keep.sum()), np.int64), (idx[keep], remap[gene[keep]])),
        shape=(len(centers_um), int(real.sum())),
    ).tocsr()
    return mat, tuple(g for g, r in zip(sample.genes, real, strict=True) if r)


def _scalefactors(path: Path, values: dict[str, float]) -> None:
    _atomic(path, lambda tmp: tmp.write_text(json.dumps(values, indent=2)))


def write_spaceranger_outs(
    sample: SpatialSample,
    out_dir: Path | str,
    *,
    layout: Literal["list", "header"] = "list",
    pitch_um: float = 100.0,
    capture_um: float = 55.0,
    hires_scalef: float = 0.5,
    lowres_scalef: float = 0.2,
) -> Path:
    """Write a Visium ``outs/`` folder: spots of ``capture_um`` on a hex lattice (doubled
    columns) of ``pitch_um``; counts = molecules within each spot. The sample image is the
    full-resolution image; µm/px = 65 / ``spot_diameter_fullres`` (Space Ranger's definition).

    ``layout="list"`` writes ``tissue_positions_list.csv`` (Space Ranger 1, no header),
    ``"header"`` writes ``tissue_positions.csv`` (Space Ranger ≥ 2).
    """
    out = Path(out_dir)
    s = _pixel_size(sample)
    h, w = sample.image.shape_hw if sample.image else (0, 0)
    dy = pitch_um * np.sqrt(3) / 2
    rows = np.arange(int((h * s - pitch_um / 2) // dy) + 1)
    cols = np.arange(int((w * s - pitch_um) // (pitch_um / 2)) + 1)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    even = (rr + cc) % 2 == 0
    rr, cc = rr[even], cc[even]
    px = np.rint(
        np.column_stack([(pitch_um / 2 + cc * pitch_um / 2) / s, (pitch_um / 2 + rr * dy) / s])
    )
    counts, genes = _spot_counts(sample, px * s, capture_um / 2)
    in_tissue = np.asarray(counts.sum(axis=1)).ravel() > 0
    barcodes = [f"SPOT{r:03d}X{c:03d}-1" for r, c in zip(rr, cc, strict=True)]
    pos = pd.DataFrame(
        {
            VisiumColumn.BARCODE: barcodes,
            VisiumColumn.IN_TISSUE: in_tissue.astype(int),
            VisiumColumn.ARRAY_ROW: rr,
            VisiumColumn.ARRAY_COL: cc,
            VisiumColumn.PXL_ROW: px[:, 1].astype(np.int64),
            VisiumColumn.PXL_COL: px[:, 0].astype(np.int64),
        }
    )
    spatial = out / VisiumFile.SPATIAL_DIR
    keep = np.flatnonzero(in_tissue)
    _write_10x_h5(out / VisiumFile.MATRIX_H5, counts[keep], [barcodes[i] for i in keep], genes)
    name = VisiumFile.POSITIONS_LIST if layout == "list" else VisiumFile.POSITIONS
    _atomic(spatial / name, lambda tmp: pos.to_csv(tmp, index=False, header=layout == "header"))
    _scalefactors(
        spatial / VisiumFile.SCALEFACTORS,
        {
            ScaleFactor.SPOT_DIAMETER: 65.0 / s,
            ScaleFactor.FIDUCIAL_DIAMETER: 65.0 / s * 1.6153846,
            ScaleFactor.HIRES: hires_scalef,
            ScaleFactor.LOWRES: lowres_scalef,
        },
    )
    rgb = _rgb(sample)
    _save_png(rgb, spatial / VisiumFile.HIRES, hires_scalef)
    _save_png(rgb, spatial / VisiumFile.LOWRES, lowres_scalef)
    return out


def write_visium_hd_outs(
    sample: SpatialSample,
    out_dir: Path | str,
    *,
    bin_um: int = 8,
    hires_scalef: float = 0.5,
    lowres_scalef: float = 0.2,
) -> Path:
    """Write ``out_dir/binned_outputs/square_{bin:03d}um/`` (matrix h5, positions parquet,
    scale factors with ``microns_per_pixel``/``bin_size_um``, hires/lowres PNGs). Bin
    ``(i, j)`` covers ``x ∈ [j·bin, (j+1)·bin)``, ``y ∈ [i·bin, (i+1)·bin)`` µm."""
    from diffst.io.visium_hd import bin_folder_name

    out = Path(out_dir)
    folder = out / VisiumFile.BINNED_DIR / bin_folder_name(bin_um)
    s = _pixel_size(sample)
    h, w = sample.image.shape_hw if sample.image else (0, 0)
    n_rows, n_cols = int(np.ceil(h * s / bin_um)), int(np.ceil(w * s / bin_um))
    x, y, gene = _transcripts(sample)
    real = ~sample.control
    keep = real[gene] & (x >= 0) & (y >= 0) & (x < n_cols * bin_um) & (y < n_rows * bin_um)
    flat = (y[keep] // bin_um).astype(np.int64) * n_cols + (x[keep] // bin_um).astype(np.int64)
    remap = np.cumsum(real) - 1
    counts = sp.coo_matrix(
        (np.ones(len(flat), np.int64), (flat, remap[gene[keep]])),
        shape=(n_rows * n_cols, int(real.sum())),
    ).tocsr()
    ii, jj = np.divmod(np.arange(n_rows * n_cols), n_cols)
    in_tissue = np.asarray(counts.sum(axis=1)).ravel() > 0
    barcodes = [f"s_{bin_um:03d}um_{i:05d}_{j:05d}-1" for i, j in zip(ii, jj, strict=True)]
    pos = pa.table(
        {
            VisiumColumn.BARCODE: barcodes,
            VisiumColumn.IN_TISSUE: in_tissue.astype(np.int32),
            VisiumColumn.ARRAY_ROW: ii,
            VisiumColumn.ARRAY_COL: jj,
            VisiumColumn.PXL_ROW: (ii + 0.5) * bin_um / s,
            VisiumColumn.PXL_COL: (jj + 0.5) * bin_um / s,
        }
    )
    genes = tuple(g for g, r in zip(sample.genes, real, strict=True) if r)
    idx = np.flatnonzero(in_tissue)
    _write_10x_h5(folder / VisiumFile.MATRIX_H5, counts[idx], [barcodes[i] for i in idx], genes)
    spatial = folder / VisiumFile.SPATIAL_DIR
    _atomic(spatial / VisiumFile.POSITIONS_PARQUET, lambda tmp: pq.write_table(pos, tmp))
    _scalefactors(
        spatial / VisiumFile.SCALEFACTORS,
        {
            ScaleFactor.SPOT_DIAMETER: bin_um / s,
            ScaleFactor.BIN_SIZE_UM: float(bin_um),
            ScaleFactor.MICRONS_PER_PIXEL: s,
            ScaleFactor.HIRES: hires_scalef,
            ScaleFactor.LOWRES: lowres_scalef,
            ScaleFactor.FIDUCIAL_DIAMETER: 130.0 / s,
        },
    )
    rgb = _rgb(sample)
    _save_png(rgb, spatial / VisiumFile.HIRES, hires_scalef)
    _save_png(rgb, spatial / VisiumFile.LOWRES, lowres_scalef)
    return out


def _xenium_table(
    sample: SpatialSample, rng: np.random.Generator, low_qv_fraction: float
) -> pa.Table:
    """Sample molecules (qv ≥ 20) + low-qv copies + control codewords, shuffled."""
    x, y, gene = _transcripts(sample)
    names = np.array(sample.genes, dtype=object)[gene]
    n = len(x)
    n_low = int(low_qv_fraction * n)
    n_ctrl = max(2, n // 100)
    low = rng.choice(n, n_low, replace=n_low > n)
    x_all = np.r_[x, x[low] + rng.normal(0, 0.5, n_low), rng.uniform(x.min(), x.max(), n_ctrl)]
    y_all = np.r_[y, y[low] + rng.normal(0, 0.5, n_low), rng.uniform(y.min(), y.max(), n_ctrl)]
    ctrl = np.array(XENIUM_CONTROL_NAMES, dtype=object)[np.arange(n_ctrl) % 2]
    names_all = np.r_[names, names[low], ctrl]
    qv = np.r_[rng.uniform(20, 40, n), rng.uniform(0, 19.9, n_low), rng.uniform(20, 40, n_ctrl)]
    cell = sample.metadata.get("transcript_cell")
    cells = np.full(n, "UNASSIGNED", dtype=object)
    if isinstance(cell, np.ndarray) and len(cell) == n:
        cells[cell >= 0] = [f"cell{c:06d}-1" for c in cell[cell >= 0]]
    cells_all = np.r_[cells, np.full(n_low + n_ctrl, "UNASSIGNED", dtype=object)]
    order = rng.permutation(len(x_all))
    return pa.table(
        {
            XeniumColumn.TRANSCRIPT_ID: np.arange(len(x_all), dtype=np.uint64) + 281474976710656,
            XeniumColumn.CELL_ID: cells_all[order].astype(str),
            XeniumColumn.OVERLAPS_NUCLEUS: np.zeros(len(x_all), np.uint8),
            XeniumColumn.GENE: names_all[order].astype(str),
            XeniumColumn.X: x_all[order].astype(np.float32),
            XeniumColumn.Y: y_all[order].astype(np.float32),
            XeniumColumn.Z: rng.uniform(10, 20, len(x_all)).astype(np.float32),
            XeniumColumn.QV: qv[order].astype(np.float32),
        }
    )


def _morphology(sample: SpatialSample) -> np.ndarray:
    """Nuclear stain ``[1, H, W]`` uint16: DAPI channel, or inverted grey of an H&E image."""
    assert sample.image is not None
    px = np.asarray(sample.image.pixels[:, :, :])
    grey = px[:, :, 0] if sample.image.kind == "fluorescence" else 255 - px.mean(axis=2)
    return (grey.astype(np.float64) * 257).astype(np.uint16)[None]


def _registered_he(
    sample: SpatialSample, he_um_per_px: float, angle_deg: float, margin_px: float = 8.0
) -> tuple[np.ndarray, np.ndarray]:
    """An H&E image on a rotated, scaled pixel grid that covers the whole morphology image
    (``margin_px`` white border), and the 10x matrix H&E px → morphology px."""
    s = _pixel_size(sample)
    a, t = he_um_per_px / s, np.deg2rad(angle_deg)
    lin = a * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    rgb = _rgb(sample)
    h, w = rgb.shape[:2]
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64)
    he_corners = corners @ np.linalg.inv(lin).T
    offset = margin_px - he_corners.min(axis=0)
    hh, ww = (np.ceil(he_corners.max(axis=0) + offset + margin_px).astype(int))[::-1]
    m = np.eye(3)
    m[:2, :2], m[:2, 2] = lin, -lin @ offset
    cc, rr = np.meshgrid(np.arange(ww) + 0.5, np.arange(hh) + 0.5)
    morph = np.c_[cc.ravel(), rr.ravel()] @ m[:2, :2].T + m[:2, 2]
    col, row = np.floor(morph[:, 0]).astype(np.int64), np.floor(morph[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    he = np.full((hh * ww, 3), 255, np.uint8)
    he[inside] = rgb[row[inside], col[inside]]
    return he.reshape(hh, ww, 3), m


def write_xenium_outs(
    sample: SpatialSample,
    out_dir: Path | str,
    *,
    he: bool = False,
    low_qv_fraction: float = 0.1,
    row_group_size: int = 20_000,
    he_um_per_px: float | None = None,
    seed: int = 0,
) -> Path:
    """Write a Xenium ``outs/`` folder from a sample with transcripts and an image.

    ``transcripts.parquet`` (columns ``transcript_id, cell_id, overlaps_nucleus, feature_name,
    x_location, y_location, z_location, qv``; several row groups) holds the sample's molecules
    with qv ≥ 20 plus ``low_qv_fraction`` extra low-qv rows and control/unassigned codewords;
    ``morphology_focus.ome.tif`` has PhysicalSizeX/Y = the image's µm/px. With ``he=True``
    a registered H&E (rotated 3°, pixel size ``he_um_per_px``) and its alignment CSV
    (H&E px → morphology px) are added as ``he_image.ome.tif`` / ``he_imagealignment.csv``.
    """
    import tifffile

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    s = _pixel_size(sample)
    table = _xenium_table(sample, rng, low_qv_fraction)
    _atomic(
        out / XeniumFile.TRANSCRIPTS_PARQUET,
        lambda tmp: pq.write_table(table, tmp, row_group_size=row_group_size),
    )
    meta = {
        "axes": "CYX",
        "PhysicalSizeX": s,
        "PhysicalSizeY": s,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeYUnit": "µm",
        "Channel": {"Name": ["DAPI"]},
    }
    morph = _morphology(sample)
    _atomic(
        out / XeniumFile.MORPHOLOGY_FOCUS,
        lambda tmp: tifffile.imwrite(tmp, morph, ome=True, photometric="minisblack", metadata=meta),
    )
    experiment = {"run_name": "synthetic", XeniumFile.EXPERIMENT_PIXEL_SIZE: s, "synthetic": True}
    _atomic(out / XeniumFile.EXPERIMENT, lambda tmp: tmp.write_text(json.dumps(experiment)))
    if he:
        he_img, m = _registered_he(sample, he_um_per_px or 1.5 * s, 3.0)
        _atomic(out / HE_FILE, lambda tmp: tifffile.imwrite(tmp, he_img, photometric="rgb"))
        _atomic(out / HE_ALIGNMENT_FILE, lambda tmp: np.savetxt(tmp, m, delimiter=","))
    return out


def write_legacy_st(
    sample: SpatialSample,
    out_dir: Path | str,
    *,
    pitch_um: float = 200.0,
    spot_um: float = 100.0,
    name: str = "synthetic_st",
    seed: int = 0,
) -> tuple[Path, Path, Path]:
    """Write a legacy ST section: ``<name>_counts.tsv.gz`` (rows ``"<x>x<y>"``, integer UMIs
    per gene), ``<name>_spots.tsv`` (``x y new_x new_y pixel_x pixel_y selected``; spots
    without molecules are unselected and absent from the counts) and ``<name>_he.jpg``.

    Spot ``(x, y)`` (1-based array coordinates) sits at µm ``(pitch/2 + (new_x − 1)·pitch, …)``
    where ``new_x`` is ``x`` plus a small jitter, as in the public ST spot tables.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    s = _pixel_size(sample)
    h, w = sample.image.shape_hw if sample.image else (0, 0)
    nx, ny = int((w * s) // pitch_um), int((h * s) // pitch_um)
    grid_y, grid_x = np.meshgrid(np.arange(1, ny + 1), np.arange(1, nx + 1), indexing="ij")
    xx, yy = grid_x.ravel(), grid_y.ravel()
    new_x = np.round(xx + rng.uniform(-0.05, 0.05, xx.size), 3)
    new_y = np.round(yy + rng.uniform(-0.05, 0.05, yy.size), 3)
    pixel_x = np.round((pitch_um / 2 + (new_x - 1) * pitch_um) / s, 2)
    pixel_y = np.round((pitch_um / 2 + (new_y - 1) * pitch_um) / s, 2)
    counts, genes = _spot_counts(sample, np.c_[pixel_x, pixel_y] * s, spot_um / 2)
    selected = np.asarray(counts.sum(axis=1)).ravel() > 0
    ids = [f"{a}x{b}" for a, b in zip(xx, yy, strict=True)]
    spots = pd.DataFrame(
        {
            LegacyStColumn.X: xx,
            LegacyStColumn.Y: yy,
            LegacyStColumn.NEW_X: new_x,
            LegacyStColumn.NEW_Y: new_y,
            LegacyStColumn.PIXEL_X: pixel_x,
            LegacyStColumn.PIXEL_Y: pixel_y,
            LegacyStColumn.SELECTED: selected.astype(int),
        }
    )
    keep = np.flatnonzero(selected)
    table = pd.DataFrame(counts[keep].toarray(), index=[ids[i] for i in keep], columns=list(genes))

    def write_counts(tmp: Path) -> None:
        with gzip.open(tmp, "wt") as fh:
            table.to_csv(fh, sep="\t")

    counts_path = _atomic(out / f"{name}_counts.tsv.gz", write_counts)
    spots_path = _atomic(
        out / f"{name}_spots.tsv", lambda t: spots.to_csv(t, sep="\t", index=False)
    )
    rgb = Image.fromarray(_rgb(sample))
    image_path = _atomic(out / f"{name}_he.jpg", lambda t: rgb.save(t, format="JPEG", quality=92))
    return counts_path, spots_path, image_path


def write_merfish_outs(
    sample: SpatialSample,
    out_dir: str | os.PathLike[str],
    *,
    offset_um: tuple[float, float] = (1000.0, 2000.0),
) -> dict[str, Path]:
    """Write a sample as a Vizgen MERFISH output folder (one z-plane).

    ``global_x``/``global_y`` are the sample's µm plus ``offset_um`` (Vizgen's experiment frame
    does not start at 0); the micron-to-mosaic transform maps that frame onto the mosaics. The
    image channels (e.g. ``DAPI``, ``polyT``) become ``mosaic_<channel>_z0.tif``, uint16.

    Returns the written paths by role (``transcripts``, ``transform``, one per channel).
    """
    import tifffile

    out = Path(out_dir)
    x, y, gene = _transcripts(sample)
    s = _pixel_size(sample)
    assert sample.image is not None
    ox, oy = offset_um
    frame = pd.DataFrame(
        {
            "barcode_id": gene,
            MerfishColumn.X.value: x + ox,
            MerfishColumn.Y.value: y + oy,
            MerfishColumn.Z.value: np.zeros(len(x), dtype=np.int64),
            "x": x / s,
            "y": y / s,
            "fov": np.zeros(len(x), dtype=np.int64),
            MerfishColumn.GENE.value: np.asarray(sample.genes, dtype=object)[gene],
            "transcript_id": np.arange(len(x)),
        }
    )
    paths = {"transcripts": out / MerfishFile.TRANSCRIPTS.value}
    _atomic(paths["transcripts"], lambda tmp: frame.to_csv(tmp, float_format="%.4f"))
    images = out / MerfishFile.IMAGES_DIR.value
    matrix = np.array([[1 / s, 0.0, -ox / s], [0.0, 1 / s, -oy / s], [0.0, 0.0, 1.0]])
    paths["transform"] = images / MerfishFile.TRANSFORM.value
    _atomic(paths["transform"], lambda tmp: np.savetxt(tmp, matrix, fmt="%.10f"))
    pixels = np.asarray(sample.image.pixels[:, :, :])
    for c, name in enumerate(sample.image.channels):
        plane = (pixels[:, :, c].astype(np.uint16) * 257).astype(np.uint16)

        def write(tmp: Path, plane: np.ndarray = plane) -> None:
            tifffile.imwrite(tmp, plane)

        paths[name] = images / f"mosaic_{name}_z0.tif"
        _atomic(paths[name], write)
    return paths
