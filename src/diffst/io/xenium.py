"""10x Xenium (Xenium Onboard Analysis ``outs/``) reader."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from diffst.geometry import AffineTransform, GeometryError
from diffst.io._constants import Platform, XeniumColumn, XeniumFile, control_mask
from diffst.io._tables import Fields, iter_csv, iter_parquet
from diffst.io.alignment import (
    AlignmentGrid,
    assess_alignment,
    check_alignment,
    image_signal,
    warn_doubtful,
)
from diffst.io.checks import Extent, check_inside_image, check_pixel_size, require_file
from diffst.io.images import ome_pixel_size_um, read_image
from diffst.io.sample import (
    ChunkedTranscripts,
    InputError,
    SpatialImage,
    SpatialSample,
    TranscriptChunk,
)

__all__ = ["read_alignment_csv", "read_xenium"]

_COLUMNS = [XeniumColumn.X, XeniumColumn.Y, XeniumColumn.GENE, XeniumColumn.QV]
_FIELDS = Fields(
    numeric=(XeniumColumn.X, XeniumColumn.Y, XeniumColumn.QV), text=(XeniumColumn.GENE,)
)
AlignmentUnits = Literal["morphology_px", "um"]


def _transcript_file(root: Path) -> Path:
    for name in (XeniumFile.TRANSCRIPTS_PARQUET, XeniumFile.TRANSCRIPTS_CSV):
        if (root / name).is_file():
            return root / name
    raise InputError(
        f"{root}: no {XeniumFile.TRANSCRIPTS_PARQUET} or {XeniumFile.TRANSCRIPTS_CSV} (Xenium outs)"
    )


def _frames(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Parquet row groups or CSV chunks of the four used columns; gene names categorical."""
    if path.suffix == ".parquet":
        frames = iter_parquet(
            path, _COLUMNS, what="transcript table", categorical=[XeniumColumn.GENE], fields=_FIELDS
        )
    else:
        frames = iter_csv(
            path, _COLUMNS, chunk_rows=chunk_rows, what="transcript table", fields=_FIELDS
        )
    for frame in frames:
        names = frame[XeniumColumn.GENE].astype("category")
        cats = names.cat.categories
        if len(cats) and isinstance(cats[0], bytes):
            names = names.cat.rename_categories([c.decode("utf-8") for c in cats])
        frame[XeniumColumn.GENE] = names
        yield frame


def _filter(frame: pd.DataFrame, min_qv: float, keep_controls: bool) -> pd.DataFrame:
    """Rows with ``qv ≥ min_qv`` and (unless ``keep_controls``) not a control codeword."""
    keep = frame[XeniumColumn.QV].to_numpy(np.float64) >= min_qv
    if not keep_controls:
        names = frame[XeniumColumn.GENE]
        ctrl = control_mask([str(c) for c in names.cat.categories])
        codes = names.cat.codes.to_numpy()
        keep &= (codes >= 0) & ~ctrl[codes]
    return frame[keep]


def _gene_codes(names: pd.Series, index: dict[str, int]) -> np.ndarray:
    """Indices into the gene tuple, looked up once per category."""
    lookup = np.array([index.get(str(c), -1) for c in names.cat.categories], dtype=np.int32)
    return lookup[names.cat.codes.to_numpy()]


@dataclass
class _Scan:
    genes: tuple[str, ...]
    n_kept: int
    n_total: int
    extent_px: Extent


def _scan(
    path: Path,
    min_qv: float,
    keep_controls: bool,
    chunk_rows: int,
    transform: AffineTransform | None,
    grid: AlignmentGrid | None = None,
) -> _Scan:
    """Gene list, kept/total counts and (given a µm → px map) the pixel extent of kept rows;
    with ``grid``, their counts per image block."""
    genes: set[str] = set()
    extent = Extent()
    extent_px = Extent()
    total = 0
    for frame in _frames(path, chunk_rows):
        total += len(frame)
        kept = _filter(frame, min_qv, keep_controls)
        xy = kept[[XeniumColumn.X, XeniumColumn.Y]].to_numpy(np.float64)
        if not np.all(np.isfinite(xy)):
            raise InputError(f"{path}: fields {XeniumColumn.X}/{XeniumColumn.Y} contain NaN")
        present = kept[XeniumColumn.GENE].cat.remove_unused_categories().cat.categories
        genes.update(str(c) for c in present)
        extent.update(xy)
        if transform is not None:
            extent_px.update(transform.apply(xy))
        if grid is not None:
            grid.add(xy)
    if extent.n == 0:
        raise InputError(f"{path}: no transcript passes qv ≥ {min_qv} (field {XeniumColumn.QV})")
    return _Scan(tuple(sorted(genes)), extent.n, total, extent_px)


def _chunks(
    path: Path, genes: tuple[str, ...], min_qv: float, keep_controls: bool, chunk_rows: int
) -> Iterator[TranscriptChunk]:
    index = {g: i for i, g in enumerate(genes)}
    for frame in _frames(path, chunk_rows):
        kept = _filter(frame, min_qv, keep_controls)
        codes = _gene_codes(kept[XeniumColumn.GENE], index)
        if np.any(codes < 0):
            raise InputError(f"{path}: field {XeniumColumn.GENE} changed since the file was opened")
        yield TranscriptChunk(
            kept[XeniumColumn.X].to_numpy(np.float64),
            kept[XeniumColumn.Y].to_numpy(np.float64),
            codes,
        )


def _morphology_file(root: Path) -> Path | None:
    for rel in (
        XeniumFile.MORPHOLOGY_FOCUS,
        f"{XeniumFile.MORPHOLOGY_FOCUS_DIR}/{XeniumFile.MORPHOLOGY_FOCUS_0000}",
        XeniumFile.MORPHOLOGY_MIP,
    ):
        if (root / rel).is_file():
            return root / rel
    return None


def _morphology_pixel_size(root: Path, morphology: Path | None) -> float:
    """µm per morphology pixel from the OME metadata, checked against ``experiment.xenium``."""
    experiment = root / XeniumFile.EXPERIMENT
    stated = None
    if experiment.is_file():
        stated = json.loads(experiment.read_text()).get(XeniumFile.EXPERIMENT_PIXEL_SIZE)
    if morphology is None:
        if stated is None:
            raise InputError(
                f"{root}: neither a morphology OME-TIFF nor {XeniumFile.EXPERIMENT} (field "
                "pixel_size) states the morphology pixel size"
            )
        return float(stated)
    sx, sy = ome_pixel_size_um(morphology)
    check_pixel_size(sy, sx, file=morphology, field="PhysicalSizeY", source="PhysicalSizeX")
    if stated is not None:
        check_pixel_size(
            float(stated),
            sx,
            file=experiment,
            field=XeniumFile.EXPERIMENT_PIXEL_SIZE,
            source=str(morphology),
        )
    return sx


def read_alignment_csv(path: Path | str) -> np.ndarray:
    """The 3×3 matrix of a 10x image-alignment CSV (comma separated, no header)."""
    path = require_file(Path(path), "image alignment matrix")
    try:
        m = np.loadtxt(path, delimiter=",", dtype=np.float64)
    except ValueError as err:
        raise InputError(f"{path}: not a numeric 3×3 matrix: {err}") from err
    if m.shape != (3, 3):
        raise InputError(f"{path}: alignment matrix must be 3×3, got shape {m.shape}")
    return m


def _he_transform(
    alignment: Path, units: AlignmentUnits, um_to_morph: AffineTransform
) -> AffineTransform:
    """µm → H&E pixels. The 10x matrix maps H&E pixels → morphology pixels (or µm): invert it."""
    try:
        he_to_target = AffineTransform(read_alignment_csv(alignment))
    except GeometryError as err:
        raise GeometryError(f"{alignment}: {err}") from err
    if units == "um":
        return he_to_target.inverse()
    return um_to_morph.compose(he_to_target.inverse())


def read_xenium(
    path: Path | str,
    *,
    min_qv: float = 20.0,
    image: Literal["morphology"] | Path | str | None = "morphology",
    alignment: Path | str | None = None,
    alignment_units: AlignmentUnits = "morphology_px",
    keep_controls: bool = False,
    chunk_rows: int = 1_000_000,
) -> SpatialSample:
    """Read a Xenium output folder.

    Files read
    ----------
    * ``transcripts.parquet`` (read row group by row group) or ``transcripts.csv.gz``
      (pandas chunks): ``x_location``, ``y_location`` (µm), ``feature_name``, ``qv``;
    * ``morphology_focus.ome.tif`` (or ``morphology_focus/morphology_focus_0000.ome.tif``,
      ``morphology_mip.ome.tif``): µm/px from OME ``PhysicalSizeX/Y``; pixel (0, 0)'s corner
      is µm (0, 0);
    * ``experiment.xenium`` (optional): ``pixel_size`` cross-checked with the OME value;
    * a registered H&E (``image`` = path) with its 10x alignment CSV (``alignment``): the
      matrix maps H&E pixels to morphology pixels (``alignment_units="morphology_px"``) or µm.

    Transcripts with ``qv < min_qv`` are dropped; control probes and unassigned/deprecated
    codewords are dropped unless ``keep_controls`` (then flagged in ``control``).
    """
    root = Path(path)
    tx = _transcript_file(root)
    spatial_image = None
    if image is not None:
        spatial_image = _xenium_image(root, image, alignment, alignment_units)
    transform = None if spatial_image is None else spatial_image.um_to_px
    grid = None
    if spatial_image is not None:
        grid = AlignmentGrid(spatial_image.shape_hw, spatial_image.um_to_px)
    scan = _scan(tx, min_qv, keep_controls, chunk_rows, transform, grid)
    genes = scan.genes
    control = control_mask(genes)
    source = ChunkedTranscripts(
        genes=genes,
        control=control,
        open_chunks=lambda: _chunks(tx, genes, min_qv, keep_controls, chunk_rows),
        path=tx,
    )
    files = {"transcripts": tx}
    alignment_report = None
    if spatial_image is not None and grid is not None:
        fields = f"{XeniumColumn.X}/{XeniumColumn.Y}"
        alignment_report = assess_alignment(
            grid, image_signal(spatial_image.pixels, spatial_image.kind, grid)
        )
        check_alignment(alignment_report, file=tx, fields=fields, image=spatial_image.path,
                        transform_file=alignment)  # fmt: skip
        check_inside_image(
            scan.extent_px,
            spatial_image.shape_hw,
            file=tx,
            field=fields,
            image=spatial_image.path,
            transform=spatial_image.um_to_px,
        )
        warn_doubtful(alignment_report, file=tx, image=spatial_image.path)
        files["image"] = spatial_image.path or tx
        if alignment is not None:
            files["alignment"] = Path(alignment)
    return SpatialSample(
        name=root.name,
        platform=Platform.XENIUM,
        image=spatial_image,
        transcripts=source,
        source_files=files,
        metadata={
            "n_transcripts": scan.n_kept,
            "n_dropped": scan.n_total - scan.n_kept,
            "min_qv": min_qv,
            "controls_kept": keep_controls,
            **({} if alignment_report is None else {"alignment": alignment_report.to_dict()}),
        },
    )


def _xenium_image(
    root: Path, image: str | Path, alignment: Path | str | None, units: AlignmentUnits
) -> SpatialImage:
    morphology = _morphology_file(root)
    if image == "morphology":
        if morphology is None:
            raise InputError(f"{root}: no morphology image ({XeniumFile.MORPHOLOGY_FOCUS} …)")
        scale = _morphology_pixel_size(root, morphology)
        pixels = read_image(morphology, what="morphology image")
        names = (
            ("DAPI",)
            if pixels.shape[2] == 1
            else tuple(f"morph{i}" for i in range(pixels.shape[2]))
        )
        return SpatialImage(
            pixels, names, AffineTransform.from_pixel_size(scale), morphology, "fluorescence"
        )
    if alignment is None:
        raise InputError(f"{image}: a registered H&E image needs its alignment CSV (alignment=)")
    um_to_morph = AffineTransform.from_pixel_size(_morphology_pixel_size(root, morphology))
    transform = _he_transform(Path(alignment), units, um_to_morph)
    pixels = read_image(image, what="H&E image")
    return SpatialImage(pixels, ("R", "G", "B")[: pixels.shape[2]], transform, Path(image), "he")
