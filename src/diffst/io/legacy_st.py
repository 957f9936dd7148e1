"""Legacy Spatial Transcriptomics (Ståhl et al. 2016; 100 µm spots, 200 µm pitch) reader."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from diffst.geometry import AffineTransform, GeometryError
from diffst.io._constants import LegacyStColumn, Platform, control_mask
from diffst.io._tables import Fields, csv_columns, read_csv_checked
from diffst.io.checks import (
    Extent,
    check_counts,
    check_inside_image,
    fit_lattice_pitch,
)
from diffst.io.images import read_image
from diffst.io.sample import InputError, SpatialImage, SpatialSample, SpotTable

__all__ = [
    "LEGACY_ST_PITCH_UM",
    "LEGACY_ST_SPOT_UM",
    "legacy_st_sections",
    "read_legacy_st",
    "spot_id",
]

LEGACY_ST_PITCH_UM = 200.0
"""Centre-to-centre distance of legacy ST spots (µm)."""
LEGACY_ST_SPOT_UM = 100.0
"""Legacy ST spot diameter (µm)."""
PITCH_TOLERANCE = 0.10
"""Largest relative disagreement between ``pitch_um`` and the coordinates (given µm/px)."""
_SPOT_COLUMNS = [c.value for c in LegacyStColumn]
_SPOT_FIELDS = Fields(
    numeric=(LegacyStColumn.NEW_X, LegacyStColumn.NEW_Y, LegacyStColumn.PIXEL_X,
             LegacyStColumn.PIXEL_Y),
    integer=(LegacyStColumn.X, LegacyStColumn.Y, LegacyStColumn.SELECTED),
)  # fmt: skip
_log = logging.getLogger(__name__)


#: suffixes of a counts file's name that are not part of the section id
_COUNTS_SUFFIXES = ("_counts", "_stdata", "_count")
_IMAGE_SUFFIXES = (".jpg", ".jpeg")


def legacy_st_sections(folder: Path | str) -> dict[str, tuple[Path, Path, Path | None]]:
    """The sections of a legacy-ST data set laid out as published, keyed by section id.

    The counts (``<id>.tsv.gz``), spot tables (``<id>_selection.tsv``, or any ``<id>*.tsv``)
    and H&E images (a ``.jpg`` in a folder named ``<id>``, or named ``<id>*.jpg``) may sit in
    parallel sub-folders at any depth, e.g. ``ST-cnts/``, ``ST-spotfiles/`` and
    ``ST-imgs/<patient>/<id>/``. A section without a spot table is left out; one whose image is
    missing has ``None`` there; an id with several candidate spot tables or images is refused.
    """
    files = [p for p in Path(folder).rglob("*") if p.is_file()]  # one walk of the tree
    tables = [p for p in files if p.name.endswith(".tsv")]
    images = [p for p in files if p.suffix.lower() in _IMAGE_SUFFIXES]
    out: dict[str, tuple[Path, Path, Path | None]] = {}
    for counts in sorted(p for p in files if p.name.endswith(".tsv.gz")):
        sid = counts.name[: -len(".tsv.gz")]
        for suffix in _COUNTS_SUFFIXES:
            sid = sid.removesuffix(suffix)
        spots = [p for p in tables if p.stem == sid or p.stem.startswith(f"{sid}_")]
        if not spots:
            continue
        pictures = [p for p in images if p.parent.name == sid or p.stem.startswith(sid)]
        for what, found in (("spot tables", spots), ("images", pictures)):
            if len(found) > 1:
                raise InputError(
                    f"{counts}: section {sid!r} has several {what}: {[str(p) for p in found]}"
                )
        if sid in out:
            raise InputError(f"{counts}: section id {sid!r} occurs twice ({out[sid][0]})")
        out[sid] = (counts, spots[0], pictures[0] if pictures else None)
    return out


def spot_id(x: int, y: int) -> str:
    """Spot name used as the row label of the counts table: ``"<x>x<y>"``."""
    return f"{x}x{y}"


def _read_counts(path: Path) -> pd.DataFrame:
    csv_columns(path, "counts table", sep="\t")
    try:
        counts = pd.read_csv(path, sep="\t", index_col=0)
    except (EOFError, OSError, pd.errors.ParserError) as err:
        raise InputError(f"{path}: the counts table is truncated or corrupt: {err}") from err
    if counts.empty:
        raise InputError(f"{path}: the counts table has no spots or no genes")
    counts.index = counts.index.astype(str)
    if counts.index.duplicated().any():
        dup = counts.index[counts.index.duplicated()][0]
        raise InputError(f"{path}: spot id {dup!r} (row label) occurs more than once")
    values = counts.to_numpy(np.float64)
    check_counts(values, file=path, field="gene columns", require_integer=True)
    return counts


def _read_spots(path: Path) -> pd.DataFrame:
    spots = read_csv_checked(path, _SPOT_COLUMNS, _SPOT_FIELDS, what="spot table", sep="\t")
    ids = [
        spot_id(int(x), int(y))
        for x, y in zip(spots[LegacyStColumn.X], spots[LegacyStColumn.Y], strict=True)
    ]
    spots.index = pd.Index(ids)
    if spots.index.duplicated().any():
        raise InputError(
            f"{path}: spot {spots.index[spots.index.duplicated()][0]} occurs twice (x, y)"
        )
    return spots


def _pixel_size(
    spots: pd.DataFrame, pitch_um: float, um_per_px: float | None, spots_path: Path
) -> tuple[float, float]:
    """µm/px (given, or ``pitch_um`` / fitted pixel pitch) and the fitted pitch in px."""
    pitch_px, _ = fit_lattice_pitch(
        spots[[LegacyStColumn.NEW_Y, LegacyStColumn.NEW_X]].to_numpy(np.float64),
        spots[[LegacyStColumn.PIXEL_X, LegacyStColumn.PIXEL_Y]].to_numpy(np.float64),
        col_step=1,
        file=spots_path,
        field="new_x/new_y → pixel_x/pixel_y",
    )
    derived = pitch_um / pitch_px
    if um_per_px is None:
        _log.warning(
            "%s: pixel size not stated; assumed %.4f µm/px from the spot pitch "
            "(%.0f µm over %.1f px)",
            spots_path,
            derived,
            pitch_um,
            pitch_px,
        )
        return derived, pitch_px
    if abs(um_per_px - derived) > PITCH_TOLERANCE * derived:
        raise GeometryError(
            f"{spots_path}: pitch_um = {pitch_um} µm disagrees with the coordinates: spots are "
            f"{pitch_px:.1f} px apart, i.e. {pitch_px * um_per_px:.1f} µm at um_per_px = "
            f"{um_per_px} (tolerance {100 * PITCH_TOLERANCE:.0f}%)"
        )
    return float(um_per_px), pitch_px


def _he_image(path: Path, scale: float, pixel_xy: np.ndarray, spots_path: Path) -> SpatialImage:
    """The H&E image (full-size pixels) with every spot checked to lie inside it."""
    pixels = read_image(path, what="H&E image")
    channels = ("R", "G", "B")[: pixels.shape[2]]
    image = SpatialImage(pixels, channels, AffineTransform.from_pixel_size(scale), path)
    extent = Extent()
    extent.update(pixel_xy)
    check_inside_image(
        extent,
        image.shape_hw,
        file=spots_path,
        field=f"{LegacyStColumn.PIXEL_X}/{LegacyStColumn.PIXEL_Y}",
        image=path,
    )
    return image


def read_legacy_st(
    counts_tsv_gz: Path | str,
    spots_tsv: Path | str,
    image_jpg: Path | str | None,
    *,
    pitch_um: float = LEGACY_ST_PITCH_UM,
    spot_diameter_um: float = LEGACY_ST_SPOT_UM,
    um_per_px: float | None = None,
) -> SpatialSample:
    """Read a legacy ST section (public breast-cancer distribution format).

    Files read
    ----------
    * ``counts_tsv_gz``: gzip TSV, one row per spot labelled ``"<x>x<y>"`` by its array
      coordinates, one column per gene, integer UMI counts;
    * ``spots_tsv``: TSV with columns ``x y new_x new_y pixel_x pixel_y selected``
      (``pixel_x`` = image column, ``pixel_y`` = row, full-size image pixels); spots of the
      table absent from the counts are ignored;
    * ``image_jpg``: the H&E image.

    The files carry no pixel size: it is derived from the lattice, µm/px = ``pitch_um`` /
    (fitted pixel distance between neighbouring spots). When ``um_per_px`` is also given it
    must agree within 10%, else :class:`GeometryError`.
    """
    counts_path, spots_path = Path(counts_tsv_gz), Path(spots_tsv)
    counts = _read_counts(counts_path)
    spots = _read_spots(spots_path)
    missing = [i for i in counts.index if i not in spots.index]
    if missing:
        raise InputError(
            f"{counts_path}: {len(missing)} spot id(s) have no row in {spots_path} "
            f"(fields {LegacyStColumn.X}/{LegacyStColumn.Y}), e.g. {missing[:3]}"
        )
    spots = spots.loc[counts.index]
    array_rc = spots[[LegacyStColumn.Y, LegacyStColumn.X]].to_numpy(np.int64)
    pixel_xy = spots[[LegacyStColumn.PIXEL_X, LegacyStColumn.PIXEL_Y]].to_numpy(np.float64)
    scale, pitch_px = _pixel_size(spots, pitch_um, um_per_px, spots_path)
    genes = tuple(str(g) for g in counts.columns)
    table = SpotTable(
        counts=counts.to_numpy(np.float64),
        genes=genes,
        centers_um=pixel_xy * scale,
        diameter_um=spot_diameter_um,
        shape="circle",
        ids=tuple(counts.index),
        array_coords=array_rc,
        lattice="square",
        pitch_um=pitch_um,
        control=control_mask(genes),
        path=counts_path,
    )
    files = {"counts": counts_path, "spots": spots_path}
    image = None
    if image_jpg is not None:
        image = _he_image(Path(image_jpg), scale, pixel_xy, spots_path)
        files["image"] = Path(image_jpg)
    return SpatialSample(
        name=counts_path.name.split(".")[0],
        platform=Platform.LEGACY_ST,
        image=image,
        spots=table,
        source_files=files,
        metadata={
            "um_per_px": scale,
            "um_per_px_source": "given" if um_per_px else f"pitch {pitch_um} µm / lattice",
            "pitch_px": pitch_px,
        },
    )
