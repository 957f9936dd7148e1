"""NanoString CosMx (flat files) reader.

Geometry (verified on the GiottoData Lung12 crops): per FOV, image ``col = x_local_px − x0`` and
``row = y_top − y_local_px`` — CosMx local y points **up**, image rows go down. ``x0`` and
``y_top`` come from the GDAL ``.aux.xml`` GeoTransform next to the composite image when
present (cropped FOVs), else ``x0 = 0`` and ``y_top`` = image height (whole FOV). The sample
frame is ``x_um = (x_local + fov_x) · s``, ``y_um = −(y_local + fov_y) · s`` (y down) with
``s`` µm/px, which the files do **not** state: the caller must pass it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from diffst.geometry import AffineTransform
from diffst.io._constants import CosmxColumn, CosmxFile, Platform, control_mask
from diffst.io._tables import Fields, iter_csv, read_csv_checked
from diffst.io.checks import Extent, check_inside_image
from diffst.io.images import read_image
from diffst.io.sample import (
    ChunkedTranscripts,
    InputError,
    SpatialImage,
    SpatialSample,
    TranscriptChunk,
)

__all__ = ["read_cosmx", "read_cosmx_labels"]

_GEOTRANSFORM = re.compile(r"<GeoTransform>([^<]+)</GeoTransform>")
_TX_COLUMNS = [CosmxColumn.FOV, CosmxColumn.X_LOCAL, CosmxColumn.Y_LOCAL, CosmxColumn.GENE]
_TX_FIELDS = Fields(
    numeric=(CosmxColumn.X_LOCAL, CosmxColumn.Y_LOCAL), integer=(CosmxColumn.FOV,),
    text=(CosmxColumn.GENE,),
)  # fmt: skip
_FOV_COLUMNS = [CosmxColumn.FOV, CosmxColumn.X_GLOBAL, CosmxColumn.Y_GLOBAL]
_FOV_FIELDS = Fields(
    numeric=(CosmxColumn.X_GLOBAL, CosmxColumn.Y_GLOBAL), integer=(CosmxColumn.FOV,)
)


@dataclass(frozen=True)
class FovFrame:
    """Where one FOV image sits: its pixels ``col = x_local − x0``, ``row = y_top − y_local``."""

    fov: int
    fov_xy_px: tuple[float, float]
    x0: float
    y_top: float
    shape_hw: tuple[int, int]
    image: Path

    @property
    def corner_px(self) -> tuple[float, float]:
        """Top-left image corner in the y-down sample frame, in pixels."""
        return self.fov_xy_px[0] + self.x0, -(self.fov_xy_px[1] + self.y_top)


def _one(root: Path, suffixes: Sequence[str], what: str) -> Path:
    hits = sorted(p for s in suffixes for p in root.glob(f"*{s}"))
    if len(hits) != 1:
        raise InputError(f"{root}: expected one {what} (*{suffixes[0]}), found {len(hits)}")
    return hits[0]


def _geotransform(image: Path, shape_hw: tuple[int, int]) -> tuple[float, float]:
    """``(x0, y_top)`` from ``<image>.aux.xml`` (unit pixels, y flipped), else whole-FOV values."""
    aux = image.with_name(image.name + ".aux.xml")
    if not aux.is_file():
        return 0.0, float(shape_hw[0])
    found = _GEOTRANSFORM.search(aux.read_text())
    if found is None:
        raise InputError(f"{aux}: field GeoTransform missing")
    gt = [float(v) for v in found.group(1).split(",")]
    if len(gt) != 6 or gt[1] != 1.0 or gt[5] != -1.0 or gt[2] != 0.0 or gt[4] != 0.0:
        raise InputError(f"{aux}: field GeoTransform {gt} is not (x0, 1, 0, y_top, 0, -1)")
    return gt[0], gt[3]


def _fov_frames(root: Path, fovs: Sequence[int]) -> list[FovFrame]:
    fov_path = _one(root, [CosmxFile.FOV_SUFFIX], "FOV positions file")
    table = read_csv_checked(fov_path, _FOV_COLUMNS, _FOV_FIELDS, what="FOV positions file")
    table = table.set_index(CosmxColumn.FOV)
    frames = []
    for fov in fovs:
        if fov not in table.index:
            raise InputError(f"{fov_path}: field {CosmxColumn.FOV} has no row for FOV {fov}")
        image = root / CosmxFile.COMPOSITE_DIR / f"{CosmxFile.COMPOSITE_PREFIX}{fov:03d}.jpg"
        pixels = read_image(image, what=f"composite image of FOV {fov}")
        shape = (int(pixels.shape[0]), int(pixels.shape[1]))
        x0, y_top = _geotransform(image, shape)
        pos = table.loc[fov]
        xy = (float(pos[CosmxColumn.X_GLOBAL]), float(pos[CosmxColumn.Y_GLOBAL]))
        frames.append(FovFrame(fov, xy, x0, y_top, shape, image))
    return frames


def _mosaic_layout(
    frames: list[FovFrame],
) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Integer paste offsets ``[n, 2]`` (col, row), exact origin (px) and canvas ``(H, W)``.

    The first FOV is placed exactly; the others to the nearest pixel (≤ 0.5 px off).
    """
    ref = np.array(frames[0].corner_px)
    offsets = np.array([np.round(np.array(f.corner_px) - ref) for f in frames], dtype=np.int64)
    shift = offsets.min(axis=0)
    offsets -= shift
    origin = (float(ref[0] + shift[0]), float(ref[1] + shift[1]))
    sizes = np.array([[f.shape_hw[1], f.shape_hw[0]] for f in frames])
    w, h = (offsets + sizes).max(axis=0)
    return offsets, origin, (int(h), int(w))


def _paste(
    frames: list[FovFrame], arrays: list[np.ndarray], dtype: np.dtype
) -> tuple[np.ndarray, tuple[float, float]]:
    offsets, origin, (h, w) = _mosaic_layout(frames)
    canvas = np.zeros((h, w, *arrays[0].shape[2:]), dtype=dtype)
    for (c, r), arr in zip(offsets, arrays, strict=True):
        canvas[r : r + arr.shape[0], c : c + arr.shape[1]] = arr
    return canvas, origin


def _scan(tx: Path, frames: list[FovFrame], chunk_rows: int) -> tuple[tuple[str, ...], int]:
    """Gene list and row count of the selected FOVs; every molecule must lie in its FOV image."""
    by_fov = {f.fov: f for f in frames}
    extents = {f.fov: Extent() for f in frames}
    genes: set[str] = set()
    for frame in iter_csv(
        tx, _TX_COLUMNS, chunk_rows=chunk_rows, what="transcript table", fields=_TX_FIELDS
    ):
        frame = frame[frame[CosmxColumn.FOV].isin(list(by_fov))]
        genes.update(frame[CosmxColumn.GENE].astype(str).unique())
        for fov, part in frame.groupby(CosmxColumn.FOV):
            f = by_fov[int(fov)]
            local = part[[CosmxColumn.X_LOCAL, CosmxColumn.Y_LOCAL]].to_numpy(np.float64)
            if not np.all(np.isfinite(local)):
                raise InputError(
                    f"{tx}: fields {CosmxColumn.X_LOCAL}/{CosmxColumn.Y_LOCAL} have NaN"
                )
            extents[f.fov].update(np.c_[local[:, 0] - f.x0, f.y_top - local[:, 1]])
    for f in frames:
        check_inside_image(
            extents[f.fov],
            f.shape_hw,
            file=tx,
            field=f"{CosmxColumn.X_LOCAL}/{CosmxColumn.Y_LOCAL} (FOV {f.fov})",
            image=f.image,
        )
    n = sum(e.n for e in extents.values())
    if n == 0:
        raise InputError(f"{tx}: no transcripts in FOVs {sorted(by_fov)}")
    return tuple(sorted(genes)), n


def _chunks(
    tx: Path, frames: list[FovFrame], genes: tuple[str, ...], um_per_px: float, chunk_rows: int
) -> Iterator[TranscriptChunk]:
    fov_x = {f.fov: f.fov_xy_px[0] for f in frames}
    fov_y = {f.fov: f.fov_xy_px[1] for f in frames}
    for frame in iter_csv(
        tx, _TX_COLUMNS, chunk_rows=chunk_rows, what="transcript table", fields=_TX_FIELDS
    ):
        frame = frame[frame[CosmxColumn.FOV].isin(list(fov_x))]
        fov = frame[CosmxColumn.FOV]
        x = (frame[CosmxColumn.X_LOCAL] + fov.map(fov_x)).to_numpy(np.float64) * um_per_px
        y = -(frame[CosmxColumn.Y_LOCAL] + fov.map(fov_y)).to_numpy(np.float64) * um_per_px
        codes = pd.Categorical(frame[CosmxColumn.GENE].astype(str), categories=genes).codes
        yield TranscriptChunk(x, y, codes.astype(np.int32))


def _resolve_fovs(root: Path, fovs: Sequence[int] | None) -> list[int]:
    if fovs is not None:
        return [int(f) for f in fovs]
    found = sorted(
        int(p.stem[-3:])
        for p in (root / CosmxFile.COMPOSITE_DIR).glob(f"{CosmxFile.COMPOSITE_PREFIX}*.jpg")
    )
    if not found:
        raise InputError(f"{root / CosmxFile.COMPOSITE_DIR}: no CellComposite_F###.jpg images")
    return found


def read_cosmx(
    path: Path | str,
    *,
    um_per_px: float | None = None,
    fovs: Sequence[int] | None = None,
    image: Literal["composite"] | None = "composite",
    chunk_rows: int = 1_000_000,
) -> SpatialSample:
    """Read CosMx flat files.

    Files read
    ----------
    * ``*_tx_file.csv``: ``fov``, ``x_local_px``, ``y_local_px`` (px), ``target``; streamed;
    * ``*_fov_positions_file.csv``: ``fov``, ``x_global_px``, ``y_global_px``;
    * ``CellComposite/CellComposite_F###.jpg`` (+ ``.aux.xml`` GeoTransform of cropped FOVs).

    Parameters
    ----------
    um_per_px
        Pixel size in µm. **Required**: CosMx flat files do not state it and releases differ
        (0.18 vs 0.12028 µm/px).
    fovs
        FOVs to read (default: all with a composite image). Several FOVs are pasted into one
        mosaic image; the first is placed exactly, the others to the nearest pixel.
    image
        ``"composite"`` (the IF composite, RGB) or ``None``.
    """
    if um_per_px is None:
        raise InputError(
            f"{path}: the CosMx pixel size is not stated in the flat files; pass um_per_px "
            "explicitly (e.g. 0.12028 or 0.18 µm/px depending on the instrument release)"
        )
    if not (np.isfinite(um_per_px) and um_per_px > 0):
        raise InputError(f"{path}: um_per_px must be a positive number of µm, got {um_per_px}")
    root = Path(path)
    tx = _one(root, [CosmxFile.TX_SUFFIX, CosmxFile.TX_SUFFIX_GZ], "transcript file")
    frames = _fov_frames(root, _resolve_fovs(root, fovs))
    genes, n = _scan(tx, frames, chunk_rows)
    control = control_mask(genes)
    source = ChunkedTranscripts(
        genes=genes,
        control=control,
        open_chunks=lambda: _chunks(tx, frames, genes, float(um_per_px), chunk_rows),
        path=tx,
    )
    spatial_image = None
    if image is not None:
        arrays = [np.asarray(read_image(f.image)) for f in frames]
        pixels, origin = _paste(frames, arrays, np.dtype(np.uint8))
        transform = AffineTransform.from_pixel_size(
            um_per_px, (origin[0] * um_per_px, origin[1] * um_per_px)
        )
        spatial_image = SpatialImage(
            pixels, ("R", "G", "B"), transform, frames[0].image, "fluorescence"
        )
    return SpatialSample(
        name=root.name,
        platform=Platform.COSMX,
        image=spatial_image,
        transcripts=source,
        source_files={"transcripts": tx} | {f"image_F{f.fov:03d}": f.image for f in frames},
        metadata={"n_transcripts": n, "fovs": [f.fov for f in frames], "um_per_px": um_per_px},
    )


def read_cosmx_labels(
    path: Path | str, *, um_per_px: float, fovs: Sequence[int] | None = None
) -> tuple[np.ndarray, AffineTransform]:
    """Cell-label mosaic ``[H, W]`` int64 (``CellLabels/CellLabels_F###.tif``, 0 = background)
    laid out exactly like :func:`read_cosmx`'s image, with its µm → px transform.

    Label ids are the ``cell_ID`` of the transcript table and are unique only within a FOV.
    """
    root = Path(path)
    frames = _fov_frames(root, _resolve_fovs(root, fovs))
    arrays = []
    for f in frames:
        file = root / CosmxFile.LABELS_DIR / f"{CosmxFile.LABELS_PREFIX}{f.fov:03d}.tif"
        labels = np.asarray(read_image(file, what=f"cell labels of FOV {f.fov}"))[:, :, 0]
        if labels.shape != f.shape_hw:
            raise InputError(
                f"{file}: shape {labels.shape} differs from the composite {f.shape_hw}"
            )
        arrays.append(labels.astype(np.int64))
    canvas, origin = _paste(frames, arrays, np.dtype(np.int64))
    return canvas, AffineTransform.from_pixel_size(
        um_per_px, (origin[0] * um_per_px, origin[1] * um_per_px)
    )
