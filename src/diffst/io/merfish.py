"""Vizgen MERFISH (MERSCOPE) reader."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from diffst.geometry import AffineTransform, GeometryError
from diffst.io._constants import MerfishColumn, MerfishFile, Platform, control_mask
from diffst.io._tables import Fields, iter_csv
from diffst.io.alignment import (
    AlignmentGrid,
    assess_alignment,
    check_alignment,
    image_signal,
    warn_doubtful,
)
from diffst.io.checks import Extent, check_inside_image, require_file
from diffst.io.images import read_image, stack_channels
from diffst.io.sample import (
    ChunkedTranscripts,
    InputError,
    SpatialImage,
    SpatialSample,
    TranscriptChunk,
)

__all__ = ["merfish_channels", "read_merfish"]

MerfishImage = Literal["dapi", "polyt", "both"]
_COLUMNS = [MerfishColumn.X, MerfishColumn.Y, MerfishColumn.Z, MerfishColumn.GENE]
_FIELDS = Fields(
    numeric=(MerfishColumn.X, MerfishColumn.Y),
    integer=(MerfishColumn.Z,),
    text=(MerfishColumn.GENE,),
)
_IMAGE_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
_CHANNEL_NAMES = {"dapi": "DAPI", "polyt": "polyT"}


def _find_transcripts(root: Path) -> Path:
    for name in (MerfishFile.TRANSCRIPTS, MerfishFile.TRANSCRIPTS_GZ, MerfishFile.TRANSCRIPTS_MINI):
        if (root / name).is_file():
            return root / name
    raise InputError(
        f"{root}: no MERFISH transcript table ({MerfishFile.TRANSCRIPTS}, "
        f"{MerfishFile.TRANSCRIPTS_GZ} or {MerfishFile.TRANSCRIPTS_MINI})"
    )


def read_micron_to_pixel(path: Path) -> AffineTransform:
    """Read a Vizgen ``micron_to_mosaic_pixel_transform.csv`` (3×3, whitespace separated)."""
    require_file(path, "micron-to-pixel transform")
    try:
        m = np.loadtxt(path, dtype=np.float64)
    except ValueError as err:
        raise InputError(f"{path}: the transform is not a numeric 3×3 matrix: {err}") from err
    if m.shape != (3, 3):
        raise InputError(f"{path}: the transform must be a 3×3 matrix, got shape {m.shape}")
    try:
        return AffineTransform(m)
    except GeometryError as err:
        raise GeometryError(f"{path}: {err}") from err


def _lowest_mosaic_z(images_dir: Path, channel: str) -> int:
    """The lowest z-plane with a mosaic of ``channel`` (0 when there is none)."""
    zs = [
        int(m.group(1))
        for p in images_dir.glob("*")
        if p.suffix.lower() in _IMAGE_SUFFIXES and channel in p.stem.lower()
        and (m := re.search(r"_z(\d+)$", p.stem.lower()))
    ]  # fmt: skip
    return min(zs, default=0)


def _find_image(images_dir: Path, channel: str, z: int) -> Path:
    """Mosaic image of ``channel`` at z-plane ``z`` (``mosaic_DAPI_z0.tif``, ``…dapi_z0.jpg``)."""
    hits = sorted(
        p
        for p in images_dir.glob("*")
        if p.suffix.lower() in _IMAGE_SUFFIXES
        and channel in p.stem.lower()
        and p.stem.lower().endswith(f"_z{z}")
    )
    if not hits:
        raise InputError(f"{images_dir}: no {_CHANNEL_NAMES[channel]} mosaic image for z-plane {z}")
    return hits[0]


@dataclass
class _Scan:
    genes: tuple[str, ...]
    n_transcripts: int
    extent_px: Extent
    z_planes: tuple[int, ...]


def _scan(
    path: Path,
    z_planes: Sequence[int] | None,
    chunk_rows: int,
    transform: AffineTransform | None,
    grid: AlignmentGrid | None = None,
) -> _Scan:
    """First pass: gene list, kept-row count, pixel extent, z-planes present and (with
    ``grid``) the molecule counts per image block."""
    genes: set[str] = set()
    zs: set[int] = set()
    extent = Extent()
    extent_px = Extent()
    for frame in iter_csv(
        path, _COLUMNS, chunk_rows=chunk_rows, what="transcript table", fields=_FIELDS
    ):
        zs.update(int(z) for z in pd.unique(frame[MerfishColumn.Z]))
        if z_planes is not None:
            frame = frame[frame[MerfishColumn.Z].isin(z_planes)]
        xy = frame[[MerfishColumn.X, MerfishColumn.Y]].to_numpy(np.float64)
        if not np.all(np.isfinite(xy)):
            raise InputError(f"{path}: field {MerfishColumn.X}/{MerfishColumn.Y} has NaN values")
        genes.update(frame[MerfishColumn.GENE].astype(str).unique())
        extent.update(xy)
        if transform is not None:
            extent_px.update(transform.apply(xy))
        if grid is not None:
            grid.add(xy)
    if z_planes is not None and not set(z_planes) <= zs:
        raise InputError(
            f"{path}: field {MerfishColumn.Z} has z-planes {sorted(zs)}; requested {list(z_planes)}"
        )
    if extent.n == 0:
        raise InputError(f"{path}: no transcripts left after selecting z-planes {z_planes}")
    chosen = tuple(sorted(zs if z_planes is None else set(z_planes)))
    return _Scan(tuple(sorted(genes)), extent.n, extent_px, chosen)


def _chunks(
    path: Path, genes: tuple[str, ...], z_planes: tuple[int, ...], chunk_rows: int
) -> Iterator[TranscriptChunk]:
    for frame in iter_csv(
        path, _COLUMNS, chunk_rows=chunk_rows, what="transcript table", fields=_FIELDS
    ):
        frame = frame[frame[MerfishColumn.Z].isin(z_planes)]
        codes = pd.Categorical(frame[MerfishColumn.GENE].astype(str), categories=genes).codes
        if np.any(codes < 0):
            raise InputError(
                f"{path}: field {MerfishColumn.GENE} changed since the file was opened"
            )
        yield TranscriptChunk(
            frame[MerfishColumn.X].to_numpy(np.float64),
            frame[MerfishColumn.Y].to_numpy(np.float64),
            codes.astype(np.int32),
        )


def merfish_channels(image: MerfishImage | Sequence[str]) -> list[str]:
    """Mosaic keys (``"dapi"``, ``"polyt"``) of ``image``: a choice or channel names.

    Names are matched case-insensitively (``["DAPI", "polyT"]``); an unknown one raises
    :class:`InputError` listing the channels a Vizgen folder has.
    """
    if isinstance(image, str):
        names = ["dapi", "polyt"] if image == "both" else [image]
    else:
        names = [str(n) for n in image]
    keys = [n.lower() for n in names]
    unknown = [n for n, k in zip(names, keys, strict=True) if k not in _CHANNEL_NAMES]
    if unknown or not keys:
        raise InputError(
            f"MERFISH image channels {unknown or names}: choose from "
            f"{list(_CHANNEL_NAMES.values())} (one or both)"
        )
    return list(dict.fromkeys(keys))


def _read_merfish_image(
    images_dir: Path, image: MerfishImage | Sequence[str], z: int, transform: AffineTransform
) -> SpatialImage:
    channels = merfish_channels(image)
    paths = [_find_image(images_dir, c, z) for c in channels]
    arrays = [
        read_image(p, what=f"{_CHANNEL_NAMES[c]} mosaic")
        for p, c in zip(paths, channels, strict=True)
    ]
    pixels = arrays[0] if len(arrays) == 1 else stack_channels(arrays)
    return SpatialImage(
        pixels=pixels,
        channels=tuple(_CHANNEL_NAMES[c] for c in channels),
        um_to_px=transform,
        path=paths[0],
        kind="fluorescence",
    )


def _first_image(
    images_dir: Path,
    image: MerfishImage | Sequence[str],
    image_z: int | None,
    z_planes: Sequence[int] | None,
    transform: AffineTransform,
) -> tuple[SpatialImage, int]:
    """The image read before the scan (its shape lays out the alignment grid) and its z-plane:
    ``image_z``, else the lowest selected plane, else the lowest plane with a mosaic."""
    z = image_z if image_z is not None else min(z_planes) if z_planes else None
    if z is None:
        z = _lowest_mosaic_z(images_dir, merfish_channels(image)[0])
    return _read_merfish_image(images_dir, image, z, transform), z


def _check_geometry(
    scan: _Scan, image: SpatialImage, grid: AlignmentGrid, tx_path: Path, tf_path: Path
) -> dict[str, object] | None:
    """Alignment (:mod:`diffst.io.alignment`), then the extent check; returns the report."""
    fields = f"{MerfishColumn.X}/{MerfishColumn.Y}"
    report = None
    if image.shape_hw == grid.shape_hw:  # mosaics of one experiment share their shape
        report = assess_alignment(grid, image_signal(image.pixels, image.kind, grid))
        check_alignment(report, file=tx_path, fields=fields, image=image.path,
                        transform_file=tf_path)  # fmt: skip
    check_inside_image(
        scan.extent_px, image.shape_hw, file=tx_path, field=fields, image=image.path,
        transform=grid.transform,
    )  # fmt: skip
    if report is None:
        return None
    warn_doubtful(report, file=tx_path, image=image.path)
    return report.to_dict()


def read_merfish(
    path: Path | str,
    *,
    z_planes: Sequence[int] | None = None,
    image: MerfishImage | Sequence[str] | None = "dapi",
    image_z: int | None = None,
    chunk_rows: int = 1_000_000,
) -> SpatialSample:
    """Read a Vizgen MERFISH output folder.

    Files read
    ----------
    * ``detected_transcripts.csv`` (or ``.csv.gz``; the GiottoData mini copy
      ``vizgen_transcripts.gz``): columns ``global_x``, ``global_y`` (µm), ``global_z``
      (z-plane index), ``gene``; streamed in ``chunk_rows``-row chunks.
    * ``images/micron_to_mosaic_pixel_transform.csv`` (or ``micron_to_pixel_transform.csv``):
      the 3×3 µm → mosaic-pixel affine; the image's µm/px comes from it.
    * ``images/mosaic_{DAPI,PolyT}_z{z}.tif`` (or ``*_{dapi,polyT}_z{z}.jpg``).

    Parameters
    ----------
    path
        The output folder.
    z_planes
        z-plane indices of transcripts to keep (``None``: all).
    image
        ``"dapi"``, ``"polyt"``, ``"both"`` (channels DAPI, polyT), channel names such as
        ``["DAPI", "polyT"]`` (any case, in the order given) or ``None`` (no image).
    image_z
        z-plane of the image (default: the first kept z-plane).
    chunk_rows
        Rows per streamed chunk.

    Returns
    -------
    SpatialSample
        Transcripts in µm (``Blank-*`` codewords kept and flagged in ``control``), the image
        ``[H, W, C]`` with its µm → px transform. Raises :class:`GeometryError` if any
        transcript maps outside the image.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: MERFISH output folder not found")
    tx_path = _find_transcripts(root)
    images_dir = root / MerfishFile.IMAGES_DIR
    transform = tf_path = None
    if image is not None:
        merfish_channels(image)  # a bad channel name fails before the transcripts are read
        tf_path = images_dir / MerfishFile.TRANSFORM
        if not tf_path.is_file():
            tf_path = images_dir / MerfishFile.TRANSFORM_MINI
        transform = read_micron_to_pixel(tf_path)
    spatial_image = grid = None
    z_read = -1
    if image is not None and transform is not None:
        spatial_image, z_read = _first_image(images_dir, image, image_z, z_planes, transform)
        grid = AlignmentGrid(spatial_image.shape_hw, transform)
    z_sel = None if z_planes is None else tuple(z_planes)
    scan = _scan(tx_path, z_sel, chunk_rows, transform, grid)
    genes = scan.genes
    control = control_mask(genes)
    source = ChunkedTranscripts(
        genes=genes,
        control=control,
        open_chunks=lambda: _chunks(tx_path, genes, scan.z_planes, chunk_rows),
        path=tx_path,
    )
    files = {"transcripts": tx_path}
    metadata: dict[str, object] = {}
    if image is not None and spatial_image is not None and grid is not None and tf_path:
        z = scan.z_planes[0] if image_z is None else image_z
        if z != z_read:  # the default plane is the first kept one, known after the scan
            spatial_image = _read_merfish_image(images_dir, image, z, grid.transform)
        metadata["alignment"] = _check_geometry(scan, spatial_image, grid, tx_path, tf_path)
        files.update(transform=tf_path, image=spatial_image.path or tf_path)
    return SpatialSample(
        name=root.name,
        platform=Platform.MERFISH,
        image=spatial_image,
        transcripts=source,
        source_files=files,
        metadata={
            "n_transcripts": scan.n_transcripts,
            "z_planes": list(scan.z_planes),
            "n_control_genes": int(control.sum()),
            **{k: v for k, v in metadata.items() if v is not None},
        },
    )
