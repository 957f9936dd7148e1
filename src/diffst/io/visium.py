"""10x Visium (Space Ranger ``outs/``) reader."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from diffst.geometry import AffineTransform, GeometryError
from diffst.io._constants import Platform, ScaleFactor, VisiumColumn, VisiumFile, control_mask
from diffst.io._tenx import check_spots_in_image, read_outs, spaceranger_image
from diffst.io.checks import check_pixel_size, fit_lattice_pitch
from diffst.io.sample import SpatialImage, SpatialSample, SpotTable

__all__ = ["VISIUM_CAPTURE_UM", "VISIUM_PITCH_UM", "VISIUM_SPOT_UM", "read_visium"]

VISIUM_SPOT_UM = 65.0
"""Theoretical Visium spot diameter (µm). Space Ranger sizes ``spot_diameter_fullres`` for it,
so µm per full-resolution pixel = 65 / spot_diameter_fullres."""
VISIUM_CAPTURE_UM = 55.0
"""Diameter of the physical Visium capture spot (µm), the area whose transcripts a spot counts."""
VISIUM_PITCH_UM = 100.0
"""Visium centre-to-centre spot distance (µm)."""
PITCH_TOLERANCE = 0.10
"""Largest relative disagreement between the fitted and the nominal lattice pitch."""


def check_hex_pitch(
    array_rc: np.ndarray, pixel_xy: np.ndarray, um_per_px: float, *, file: Path, sf_path: Path
) -> float:
    """Fit the hex lattice (doubled columns) and compare its pitch with 100 µm; return pitch µm."""
    pitch_px, _ = fit_lattice_pitch(
        array_rc, pixel_xy, col_step=2, file=file, field="array_row/array_col → pxl_*_in_fullres"
    )
    pitch_um = pitch_px * um_per_px
    if abs(pitch_um - VISIUM_PITCH_UM) > PITCH_TOLERANCE * VISIUM_PITCH_UM:
        raise GeometryError(
            f"{sf_path}: field {ScaleFactor.SPOT_DIAMETER} gives {um_per_px:.4f} µm/px, so the "
            f"spot lattice of {file} has a pitch of {pitch_um:.1f} µm ({pitch_px:.1f} px), not "
            f"the Visium {VISIUM_PITCH_UM:.0f} µm (tolerance {100 * PITCH_TOLERANCE:.0f}%)"
        )
    return pitch_um


def _check_fullres_shape(
    image: SpatialImage, spatial_dir: Path, sf: dict[str, float], sf_path: Path
) -> None:
    """A full-resolution image must be ``1 / tissue_hires_scalef`` times the hires PNG."""
    hires = spatial_dir / VisiumFile.HIRES
    if not hires.is_file():
        return
    with Image.open(hires) as im:
        hires_w = im.size[0]
    full_w = image.shape_hw[1]
    check_pixel_size(
        sf[ScaleFactor.HIRES],
        hires_w / full_w,
        file=sf_path,
        field=ScaleFactor.HIRES,
        source=f"the widths of {hires.name} ({hires_w} px) and {image.path} ({full_w} px)",
        unit="",
    )


def read_visium(
    path: Path | str,
    *,
    image: Literal["hires", "lowres"] | Path | str | None = "hires",
    in_tissue_only: bool = True,
) -> SpatialSample:
    """Read a Space Ranger Visium ``outs/`` folder.

    Files read
    ----------
    * ``filtered_feature_bc_matrix.h5`` (h5py): counts, barcodes, feature ids and names;
    * ``spatial/tissue_positions.csv`` (with header) or ``spatial/tissue_positions_list.csv``
      (Space Ranger 1, no header): ``barcode, in_tissue, array_row, array_col,
      pxl_row_in_fullres, pxl_col_in_fullres``;
    * ``spatial/scalefactors_json.json``: µm/px = 65 / ``spot_diameter_fullres`` (Space
      Ranger sizes the spot diameter for a 65 µm spot), ``tissue_{hires,lowres}_scalef``;
    * ``spatial/tissue_{hires,lowres}_image.png`` or a full-resolution image file.

    Spots are 55 µm capture circles. The sample frame is µm = full-resolution pixel × µm/px
    (origin at pixel (0, 0)'s corner). The image transform composes that with the image's
    scale factor. The hex lattice
    (doubled columns) is fitted and its pitch must be within 10% of 100 µm.

    Parameters
    ----------
    path
        The ``outs/`` folder.
    image
        ``"hires"``, ``"lowres"``, a path to the full-resolution image, or ``None``.
    in_tissue_only
        Keep only barcodes with ``in_tissue == 1``.
    """
    root = Path(path)
    outs = read_outs(root)
    pos = outs.pos
    um_per_px = VISIUM_SPOT_UM / outs.sf[ScaleFactor.SPOT_DIAMETER]
    keep = (
        pos[VisiumColumn.IN_TISSUE].to_numpy() == 1 if in_tissue_only else np.ones(len(pos), bool)
    )
    pos = pos[keep]
    pixel_xy = pos[[VisiumColumn.PXL_COL, VisiumColumn.PXL_ROW]].to_numpy(np.float64)
    array_rc = pos[[VisiumColumn.ARRAY_ROW, VisiumColumn.ARRAY_COL]].to_numpy(np.int64)
    pitch_um = check_hex_pitch(
        array_rc, pixel_xy, um_per_px, file=outs.pos_path, sf_path=outs.sf_path
    )
    spots = SpotTable(
        counts=outs.mat.counts[np.flatnonzero(keep)],
        genes=outs.mat.genes,
        centers_um=pixel_xy * um_per_px,
        diameter_um=VISIUM_CAPTURE_UM,
        shape="circle",
        ids=tuple(pos.index),
        array_coords=array_rc,
        lattice="hex",
        pitch_um=pitch_um,
        is_raw_counts=outs.mat.is_integer,
        gene_ids=outs.mat.gene_ids,
        control=control_mask(outs.mat.genes),
        path=outs.h5,
    )
    files = outs.files()
    spatial_image = None
    if image is not None:
        fullres = AffineTransform.from_pixel_size(um_per_px)
        spatial_image = spaceranger_image(outs.spatial_dir, image, outs.sf, fullres)
        if image not in ("hires", "lowres"):
            _check_fullres_shape(spatial_image, outs.spatial_dir, outs.sf, outs.sf_path)
        check_spots_in_image(spatial_image, spots.centers_um, outs.pos_path)
        files["image"] = spatial_image.path or outs.pos_path
    return SpatialSample(
        name=root.name,
        platform=Platform.VISIUM,
        image=spatial_image,
        spots=spots,
        source_files=files,
        metadata={"um_per_px_fullres": um_per_px, "scalefactors": outs.sf},
    )
