"""diffst.preparation: a SpatialSample → a store of paired HR/LR patches with image views.

Two routes: binned transcripts as the HR map (:mod:`diffst.preparation.api`) and measured spot
arrays as the HR map (:mod:`diffst.preparation.spots`); both write the same store format.
"""

from diffst.preparation.api import plan_section, prepare
from diffst.preparation.plan import PatchPlan, PreparedStore, plan_patches, select_genes
from diffst.sections.config import (
    PrepareConfig,
    SplitConfig,
    SpotHRConfig,
    TissueConfig,
    ViewConfig,
)

__all__ = [
    "PatchPlan",
    "PrepareConfig",
    "PreparedStore",
    "SplitConfig",
    "SpotHRConfig",
    "TissueConfig",
    "ViewConfig",
    "plan_patches",
    "plan_section",
    "prepare",
    "select_genes",
]
