"""Pieces shared by the 10x Space Ranger readers (Visium, Visium HD): the HDF5 feature-barcode
matrix, ``scalefactors_json.json``, spot/bin positions and the hires/lowres images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from diffst.geometry import AffineTransform
from diffst.io._constants import H5Matrix, ScaleFactor, VisiumColumn, VisiumFile
from diffst.io._tables import Fields, check_fields, iter_parquet, read_csv_checked
from diffst.io.checks import Extent, check_counts, check_inside_image, require_columns, require_file
from diffst.io.images import read_image
from diffst.io.sample import InputError, SpatialImage

GENE_EXPRESSION = "Gene Expression"
POSITION_COLUMNS = [c.value for c in VisiumColumn]
POSITION_FIELDS = Fields(
    numeric=(VisiumColumn.PXL_ROW, VisiumColumn.PXL_COL),
    integer=(VisiumColumn.IN_TISSUE, VisiumColumn.ARRAY_ROW, VisiumColumn.ARRAY_COL),
    text=(VisiumColumn.BARCODE,),
)


@dataclass
class TenxMatrix:
    """A feature-barcode matrix restricted to Gene Expression features."""

    counts: sp.csr_matrix
    """``[n_barcodes, n_genes]`` counts."""
    barcodes: tuple[str, ...]
    genes: tuple[str, ...]
    """Unique gene names (symbols; duplicates get ``-<id>`` appended)."""
    gene_ids: tuple[str, ...]
    is_integer: bool


def _decode(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def unique_names(names: list[str], ids: list[str]) -> tuple[str, ...]:
    """Make gene names unique: a repeated symbol becomes ``<symbol>-<id>``."""
    seen = pd.Series(names).duplicated(keep=False).to_numpy()
    return tuple(f"{n}-{i}" if dup else n for n, i, dup in zip(names, ids, seen, strict=True))


def read_10x_h5(path: Path) -> TenxMatrix:
    """Read a 10x ``filtered_feature_bc_matrix.h5`` (``matrix/`` group, CSC by barcode)."""
    require_file(path, "feature-barcode matrix")
    try:
        with h5py.File(path, "r") as f:
            if H5Matrix.GROUP not in f:
                raise InputError(
                    f"{path}: HDF5 group {H5Matrix.GROUP!r} missing (not a 10x matrix)"
                )
            g = f[H5Matrix.GROUP]
            need = [H5Matrix.DATA, H5Matrix.INDICES, H5Matrix.INDPTR, H5Matrix.SHAPE]
            require_columns(g.keys(), [*need, H5Matrix.BARCODES, H5Matrix.FEATURES], path)
            n_feat, n_bc = (int(v) for v in g[H5Matrix.SHAPE][:])
            data = g[H5Matrix.DATA][:]
            mat = sp.csr_matrix(
                (data, g[H5Matrix.INDICES][:], g[H5Matrix.INDPTR][:]), shape=(n_bc, n_feat)
            )
            barcodes = _decode(g[H5Matrix.BARCODES][:])
            feats = g[H5Matrix.FEATURES]
            ids = _decode(feats[H5Matrix.FEATURE_ID][:])
            names = (
                _decode(feats[H5Matrix.FEATURE_NAME][:]) if H5Matrix.FEATURE_NAME in feats else ids
            )
            ftype = (
                _decode(feats[H5Matrix.FEATURE_TYPE][:])
                if H5Matrix.FEATURE_TYPE in feats
                else [GENE_EXPRESSION] * n_feat
            )
    except OSError as err:
        raise InputError(f"{path}: not a readable HDF5 file (truncated?): {err}") from err
    is_int = check_counts(data, file=path, field="matrix/data", require_integer=False)
    keep = np.array([t == GENE_EXPRESSION for t in ftype])
    if not keep.any():
        raise InputError(f"{path}: field features/feature_type has no {GENE_EXPRESSION!r} rows")
    names = [n for n, k in zip(names, keep, strict=True) if k]
    ids = [i for i, k in zip(ids, keep, strict=True) if k]
    return TenxMatrix(
        counts=mat[:, np.flatnonzero(keep)].tocsr(),
        barcodes=tuple(barcodes),
        genes=unique_names(names, ids),
        gene_ids=tuple(ids),
        is_integer=is_int,
    )


def read_scalefactors(path: Path) -> dict[str, float]:
    """Read ``scalefactors_json.json``; require the spot diameter and both image scales."""
    require_file(path, "scale factors")
    try:
        sf = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON: {err}") from err
    need = [ScaleFactor.SPOT_DIAMETER, ScaleFactor.HIRES, ScaleFactor.LOWRES]
    require_columns(sf.keys(), need, path)
    for key in need:
        if not (isinstance(sf[key], int | float) and sf[key] > 0):
            raise InputError(f"{path}: field {key} must be a positive number, got {sf[key]!r}")
    return {k: float(v) for k, v in sf.items() if isinstance(v, int | float)}


def read_positions(spatial_dir: Path) -> tuple[pd.DataFrame, Path]:
    """Spot/bin positions indexed by barcode, from whichever layout is present.

    ``tissue_positions.parquet`` (Visium HD), ``tissue_positions.csv`` (header, Space Ranger
    ≥ 2) or ``tissue_positions_list.csv`` (no header, Space Ranger 1).
    """
    parquet = spatial_dir / VisiumFile.POSITIONS_PARQUET
    with_header = spatial_dir / VisiumFile.POSITIONS
    no_header = spatial_dir / VisiumFile.POSITIONS_LIST
    if parquet.is_file():
        frames = iter_parquet(parquet, POSITION_COLUMNS, what="positions", fields=POSITION_FIELDS)
        df, path = pd.concat(list(frames)), parquet
    elif with_header.is_file():
        df = read_csv_checked(with_header, POSITION_COLUMNS, POSITION_FIELDS, what="spot positions")
        path = with_header
    elif no_header.is_file():
        require_file(no_header, "spot positions")
        df = pd.read_csv(no_header, header=None)
        if df.shape[1] != len(POSITION_COLUMNS):
            raise InputError(
                f"{no_header}: expected {len(POSITION_COLUMNS)} columns {POSITION_COLUMNS}, "
                f"got {df.shape[1]}"
            )
        df.columns = POSITION_COLUMNS
        df, path = check_fields(df, no_header, POSITION_FIELDS, first=1), no_header
    else:
        raise InputError(
            f"{spatial_dir}: no {VisiumFile.POSITIONS_PARQUET}, {VisiumFile.POSITIONS} or "
            f"{VisiumFile.POSITIONS_LIST}"
        )
    df[VisiumColumn.BARCODE] = df[VisiumColumn.BARCODE].astype(str)
    if df[VisiumColumn.BARCODE].duplicated().any():
        dup = df[VisiumColumn.BARCODE][df[VisiumColumn.BARCODE].duplicated()].iloc[0]
        raise InputError(f"{path}: field {VisiumColumn.BARCODE} has duplicates (e.g. {dup})")
    return df.set_index(VisiumColumn.BARCODE), path


def align_positions(mat: TenxMatrix, pos: pd.DataFrame, h5: Path, pos_path: Path) -> pd.DataFrame:
    """Positions in matrix-barcode order; error when a matrix barcode has no position."""
    missing = [b for b in mat.barcodes if b not in pos.index]
    if missing:
        raise InputError(
            f"{h5}: {len(missing)} barcode(s) have no row in {pos_path} (field "
            f"{VisiumColumn.BARCODE}), e.g. {missing[:3]}"
        )
    return pos.loc[list(mat.barcodes)]


@dataclass
class SpaceRangerOuts:
    """The files every Space Ranger spot/bin reader opens first, read and cross-checked."""

    spatial_dir: Path  # <outs>/spatial
    h5: Path  # the feature-barcode matrix file
    mat: TenxMatrix
    pos: pd.DataFrame  # positions in matrix-barcode order (index: barcode)
    pos_path: Path
    sf: dict[str, float]  # scale factors
    sf_path: Path

    def files(self) -> dict[str, Path]:
        """``SpatialSample.source_files`` entries of these files."""
        return {"matrix": self.h5, "positions": self.pos_path, "scalefactors": self.sf_path}


def read_outs(folder: Path) -> SpaceRangerOuts:
    """Matrix, positions (aligned to the matrix's barcodes) and scale factors of ``folder``
    (a Visium ``outs/`` or a Visium HD ``square_XXXum/`` folder)."""
    spatial_dir = folder / VisiumFile.SPATIAL_DIR
    h5 = folder / VisiumFile.MATRIX_H5
    mat = read_10x_h5(h5)
    pos, pos_path = read_positions(spatial_dir)
    pos = align_positions(mat, pos, h5, pos_path)
    sf_path = spatial_dir / VisiumFile.SCALEFACTORS
    return SpaceRangerOuts(spatial_dir, h5, mat, pos, pos_path, read_scalefactors(sf_path), sf_path)


def spaceranger_image(
    spatial_dir: Path,
    image: str | Path,
    scalefactors: dict[str, float],
    fullres_to_px: AffineTransform,
) -> SpatialImage:
    """``"hires"``/``"lowres"`` PNG (transform composed with its scale) or a full-res file.

    Raises for blank placeholder images (every pixel equal).
    """
    if image in ("hires", "lowres"):
        name = VisiumFile.HIRES if image == "hires" else VisiumFile.LOWRES
        key = ScaleFactor.HIRES if image == "hires" else ScaleFactor.LOWRES
        path = spatial_dir / name
        pixels = read_image(path, what=f"{image} image")
        transform = fullres_to_px.scaled(scalefactors[key])
    else:
        path = Path(image)
        pixels = read_image(path, what="full-resolution image")
        transform = fullres_to_px
    arr = np.asarray(pixels[:, :, :]) if pixels.shape[0] * pixels.shape[1] < 4e7 else None
    if arr is not None and arr.size and arr.min() == arr.max():
        raise InputError(
            f"{path}: the image is blank (every pixel = {arr.flat[0]}); it is a placeholder, "
            "use another image (e.g. image='lowres' or a full-resolution file)"
        )
    channels = ("R", "G", "B") if pixels.shape[2] >= 3 else ("grey",)
    if pixels.shape[2] > 3:
        pixels = np.asarray(pixels[:, :, :3])
    return SpatialImage(pixels=pixels, channels=channels, um_to_px=transform, path=path, kind="he")


def check_spots_in_image(image: SpatialImage, centers_um: np.ndarray, pos_path: Path) -> None:
    """Raise unless every spot centre ``[n, 2]`` (µm) maps inside ``image`` (10x positions)."""
    extent = Extent()
    extent.update(image.um_to_px.apply(centers_um))
    check_inside_image(
        extent,
        image.shape_hw,
        file=pos_path,
        field=f"{VisiumColumn.PXL_COL}/{VisiumColumn.PXL_ROW}",
        image=image.path,
        transform=image.um_to_px,
    )
