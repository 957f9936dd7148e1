"""10x Visium HD (Space Ranger ≥ 3 ``binned_outputs/``) reader."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from diffst.geometry import AffineTransform, GeometryError
from diffst.io._constants import Platform, ScaleFactor, VisiumColumn, VisiumFile, control_mask
from diffst.io._tenx import check_spots_in_image, read_outs, spaceranger_image
from diffst.io.checks import check_pixel_size, fit_lattice_pitch
from diffst.io.sample import InputError, SpatialSample, SpotTable

__all__ = ["bin_folder_name", "read_visium_hd"]

PITCH_TOLERANCE = 0.10
"""Largest relative disagreement between the fitted bin pitch and ``bin_um``."""


def bin_folder_name(bin_um: int) -> str:
    """``square_008um`` for 8 µm bins."""
    return f"square_{bin_um:03d}um"


def _bin_dir(root: Path, bin_um: int) -> Path:
    if root.name.startswith("square_"):
        return root
    folder = root / VisiumFile.BINNED_DIR / bin_folder_name(bin_um)
    if not folder.is_dir():
        have = sorted(p.name for p in (root / VisiumFile.BINNED_DIR).glob("square_*"))
        raise InputError(f"{folder}: no {bin_um} µm bins here (bin folders present: {have})")
    return folder


def _pixel_size(sf: dict[str, float], bin_um: int, sf_path: Path) -> float:
    """µm per full-res pixel: ``microns_per_pixel``, checked against bin size / bin diameter."""
    stated_bin = sf.get(ScaleFactor.BIN_SIZE_UM)
    if stated_bin is not None and abs(stated_bin - bin_um) > 1e-6:
        raise InputError(f"{sf_path}: field {ScaleFactor.BIN_SIZE_UM} = {stated_bin}, not {bin_um}")
    derived = bin_um / sf[ScaleFactor.SPOT_DIAMETER]
    stated = sf.get(ScaleFactor.MICRONS_PER_PIXEL)
    if stated is None:
        return derived
    check_pixel_size(
        stated,
        derived,
        file=sf_path,
        field=ScaleFactor.MICRONS_PER_PIXEL,
        source=f"{bin_um} µm / {ScaleFactor.SPOT_DIAMETER}",
    )
    return stated


def read_visium_hd(
    path: Path | str,
    *,
    bin_um: Literal[2, 8, 16] = 8,
    image: Literal["hires", "lowres"] | Path | str | None = "hires",
) -> SpatialSample:
    """Read one bin size of a Visium HD ``outs/`` folder.

    Files read (in ``binned_outputs/square_{bin:03d}um/``, or ``path`` itself if it is one)
    ----------
    * ``filtered_feature_bc_matrix.h5``: bin × gene counts (h5py);
    * ``spatial/tissue_positions.parquet``: ``barcode, in_tissue, array_row, array_col,
      pxl_row_in_fullres, pxl_col_in_fullres`` (bin centres, full-res pixels);
    * ``spatial/scalefactors_json.json``: ``microns_per_pixel``, ``bin_size_um``,
      ``spot_diameter_fullres`` (bin side in px), ``tissue_{hires,lowres}_scalef``;
    * ``spatial/tissue_{hires,lowres}_image.png`` or a full-resolution image file.

    Bins are squares of side ``bin_um`` on a square lattice whose fitted pitch must be within
    10% of ``bin_um``.
    """
    folder = _bin_dir(Path(path), int(bin_um))
    outs = read_outs(folder)
    um_per_px = _pixel_size(outs.sf, int(bin_um), outs.sf_path)
    pixel_xy = outs.pos[[VisiumColumn.PXL_COL, VisiumColumn.PXL_ROW]].to_numpy(np.float64)
    array_rc = outs.pos[[VisiumColumn.ARRAY_ROW, VisiumColumn.ARRAY_COL]].to_numpy(np.int64)
    pitch_px, _ = fit_lattice_pitch(
        array_rc, pixel_xy, col_step=1, file=outs.pos_path, field="array_row/array_col → pxl_*"
    )
    if abs(pitch_px * um_per_px - bin_um) > PITCH_TOLERANCE * bin_um:
        raise GeometryError(
            f"{outs.pos_path}: bins are {pitch_px * um_per_px:.2f} µm apart at "
            f"{um_per_px:.4f} µm/px ({outs.sf_path.name}), not {bin_um} µm "
            f"(tolerance {100 * PITCH_TOLERANCE:.0f}%)"
        )
    spots = SpotTable(
        counts=outs.mat.counts,
        genes=outs.mat.genes,
        centers_um=pixel_xy * um_per_px,
        diameter_um=float(bin_um),
        shape="square",
        ids=outs.mat.barcodes,
        array_coords=array_rc,
        lattice="square",
        pitch_um=float(bin_um),
        is_raw_counts=outs.mat.is_integer,
        gene_ids=outs.mat.gene_ids,
        control=control_mask(outs.mat.genes),
        path=outs.h5,
    )
    files = outs.files()
    spatial_image = None
    if image is not None:
        spatial_image = spaceranger_image(
            outs.spatial_dir, image, outs.sf, AffineTransform.from_pixel_size(um_per_px)
        )
        check_spots_in_image(spatial_image, spots.centers_um, outs.pos_path)
        files["image"] = spatial_image.path or outs.pos_path
    return SpatialSample(
        name=folder.parent.parent.name
        if folder.parent.name == VisiumFile.BINNED_DIR
        else folder.name,
        platform=Platform.VISIUM_HD,
        image=spatial_image,
        spots=spots,
        source_files=files,
        metadata={"um_per_px_fullres": um_per_px, "bin_um": int(bin_um), "scalefactors": outs.sf},
    )
