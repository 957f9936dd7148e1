"""File and column names of every supported platform, in one place.

Readers refer to files and fields only through these enums, so a renamed column in a new
instrument release is a one-line change here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum

import numpy as np


class Platform(StrEnum):
    """Platform names used in :attr:`diffst.io.sample.SpatialSample.platform`."""

    MERFISH = "merfish"
    XENIUM = "xenium"
    VISIUM = "visium"
    VISIUM_HD = "visium_hd"
    H5AD = "h5ad"
    COSMX = "cosmx"
    LEGACY_ST = "legacy_st"
    SYNTHETIC = "synthetic"


# ---------------------------------------------------------------------------- Vizgen MERFISH
class MerfishFile(StrEnum):
    """Vizgen output files (standard names and the GiottoData mini-dataset names)."""

    TRANSCRIPTS = "detected_transcripts.csv"
    TRANSCRIPTS_GZ = "detected_transcripts.csv.gz"
    TRANSCRIPTS_MINI = "vizgen_transcripts.gz"
    IMAGES_DIR = "images"
    TRANSFORM = "micron_to_mosaic_pixel_transform.csv"
    TRANSFORM_MINI = "micron_to_pixel_transform.csv"


class MerfishColumn(StrEnum):
    """Columns of ``detected_transcripts.csv``."""

    X = "global_x"
    Y = "global_y"
    Z = "global_z"
    GENE = "gene"


# ---------------------------------------------------------------------------- 10x Xenium
class XeniumFile(StrEnum):
    """Xenium Onboard Analysis output files."""

    TRANSCRIPTS_PARQUET = "transcripts.parquet"
    TRANSCRIPTS_CSV = "transcripts.csv.gz"
    MORPHOLOGY_FOCUS = "morphology_focus.ome.tif"
    MORPHOLOGY_FOCUS_DIR = "morphology_focus"
    MORPHOLOGY_FOCUS_0000 = "morphology_focus_0000.ome.tif"
    MORPHOLOGY_MIP = "morphology_mip.ome.tif"
    EXPERIMENT = "experiment.xenium"
    EXPERIMENT_PIXEL_SIZE = "pixel_size"
    """Key of ``experiment.xenium`` holding the morphology pixel size (µm)."""


class XeniumColumn(StrEnum):
    """Columns of ``transcripts.parquet`` / ``transcripts.csv.gz``."""

    TRANSCRIPT_ID = "transcript_id"
    CELL_ID = "cell_id"
    OVERLAPS_NUCLEUS = "overlaps_nucleus"
    GENE = "feature_name"
    X = "x_location"
    Y = "y_location"
    Z = "z_location"
    QV = "qv"


# ---------------------------------------------------------------------------- 10x Visium / HD
class VisiumFile(StrEnum):
    """Space Ranger output files (``outs/``)."""

    MATRIX_H5 = "filtered_feature_bc_matrix.h5"
    SPATIAL_DIR = "spatial"
    POSITIONS = "tissue_positions.csv"
    POSITIONS_LIST = "tissue_positions_list.csv"
    POSITIONS_PARQUET = "tissue_positions.parquet"
    SCALEFACTORS = "scalefactors_json.json"
    HIRES = "tissue_hires_image.png"
    LOWRES = "tissue_lowres_image.png"
    BINNED_DIR = "binned_outputs"


class VisiumColumn(StrEnum):
    """Columns of ``tissue_positions.csv`` (Space Ranger ≥ 2 header; older files have none)."""

    BARCODE = "barcode"
    IN_TISSUE = "in_tissue"
    ARRAY_ROW = "array_row"
    ARRAY_COL = "array_col"
    PXL_ROW = "pxl_row_in_fullres"
    PXL_COL = "pxl_col_in_fullres"


class ScaleFactor(StrEnum):
    """Keys of ``scalefactors_json.json``."""

    SPOT_DIAMETER = "spot_diameter_fullres"
    FIDUCIAL_DIAMETER = "fiducial_diameter_fullres"
    HIRES = "tissue_hires_scalef"
    LOWRES = "tissue_lowres_scalef"
    BIN_SIZE_UM = "bin_size_um"
    MICRONS_PER_PIXEL = "microns_per_pixel"


class H5Matrix(StrEnum):
    """Datasets of a 10x feature-barcode HDF5 matrix."""

    GROUP = "matrix"
    DATA = "data"
    INDICES = "indices"
    INDPTR = "indptr"
    SHAPE = "shape"
    BARCODES = "barcodes"
    FEATURES = "features"
    FEATURE_ID = "id"
    FEATURE_NAME = "name"
    FEATURE_TYPE = "feature_type"


# ---------------------------------------------------------------------------- AnnData
class AnnDataKey(StrEnum):
    """scanpy/squidpy slots read from ``.h5ad`` files."""

    SPATIAL = "spatial"
    IMAGES = "images"
    SCALEFACTORS = "scalefactors"
    GENE_IDS = "gene_ids"


# ---------------------------------------------------------------------------- NanoString CosMx
class CosmxFile(StrEnum):
    """Suffixes / folders of CosMx flat files (prefixed with the run name, e.g. ``Lung12_``)."""

    TX_SUFFIX = "_tx_file.csv"
    TX_SUFFIX_GZ = "_tx_file.csv.gz"
    FOV_SUFFIX = "_fov_positions_file.csv"
    COMPOSITE_DIR = "CellComposite"
    LABELS_DIR = "CellLabels"
    COMPOSITE_PREFIX = "CellComposite_F"
    """Followed by the zero-padded FOV number and ``.jpg``."""
    LABELS_PREFIX = "CellLabels_F"
    """Followed by the zero-padded FOV number and ``.tif``."""


class CosmxColumn(StrEnum):
    """Columns of the CosMx transcript and FOV-position tables."""

    FOV = "fov"
    CELL_ID = "cell_ID"
    X_LOCAL = "x_local_px"
    Y_LOCAL = "y_local_px"
    X_GLOBAL = "x_global_px"
    Y_GLOBAL = "y_global_px"
    GENE = "target"


# ---------------------------------------------------------------------------- legacy ST
class LegacyStColumn(StrEnum):
    """Columns of the legacy Spatial Transcriptomics spot table (``spots.tsv``)."""

    X = "x"
    Y = "y"
    NEW_X = "new_x"
    NEW_Y = "new_y"
    PIXEL_X = "pixel_x"
    PIXEL_Y = "pixel_y"
    SELECTED = "selected"


CONTROL_PATTERN = re.compile(
    r"^(blank|neg_?control|negprb|unassignedcodeword|deprecatedcodeword|"
    r"intergenic|antisense|systemcontrol)",
    re.IGNORECASE,
)
"""Names of control probes / codewords: Vizgen ``Blank-*``, Xenium ``NegControlProbe_*``,
``NegControlCodeword_*``, ``UnassignedCodeword_*``, ``DeprecatedCodeword_*``, ``Intergenic*``,
``antisense_*``; CosMx ``NegPrb*`` and ``SystemControl*``."""


def is_control(name: str) -> bool:
    """True when ``name`` is a control probe or a control/unassigned codeword."""
    return CONTROL_PATTERN.match(name) is not None


def control_mask(genes: Sequence[str]) -> np.ndarray:
    """Bool ``[len(genes)]``: :func:`is_control` of every gene name."""
    return np.array([is_control(g) for g in genes], dtype=bool)
