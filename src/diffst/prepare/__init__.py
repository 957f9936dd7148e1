"""diffst.prepare: a SpatialSample → a store of paired HR/LR patches with image views."""

from diffst.prepare.api import (
    PatchPlan,
    PreparedStore,
    SectionInputs,
    build_section_inputs,
    plan_patches,
    prepare,
    section_geometry,
    select_genes,
)
from diffst.prepare.binning import (
    GridGeometry,
    bin_transcripts,
    pool_grid,
    rasterise_spots,
    spot_sums_from_transcripts,
    visium_lattice,
)
from diffst.prepare.config import PrepareConfig, SplitConfig, TissueConfig, ViewConfig
from diffst.prepare.tiling import tissue_mask_bins
from diffst.prepare.views import image_views

__all__ = [
    "GridGeometry",
    "PatchPlan",
    "PrepareConfig",
    "PreparedStore",
    "SectionInputs",
    "SplitConfig",
    "TissueConfig",
    "ViewConfig",
    "bin_transcripts",
    "build_section_inputs",
    "image_views",
    "plan_patches",
    "pool_grid",
    "prepare",
    "rasterise_spots",
    "section_geometry",
    "select_genes",
    "spot_sums_from_transcripts",
    "tissue_mask_bins",
    "visium_lattice",
]
