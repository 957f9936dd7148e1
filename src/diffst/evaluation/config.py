"""Configuration of ``diffst evaluate`` / ``benchmark`` / ``demo`` (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["BaselineName", "EvaluateConfig"]

BaselineName = Literal["nearest", "bicubic"]


@dataclass(frozen=True)
class EvaluateConfig:
    """How predictions are scored and reported.

    Defaults follow the Diff-ST paper where it states a value (patch-wise min-max scaling and
    |PCC| for the ``paper`` protocol). Interval coverage uses the ``q05``/``q95`` layers (90%).
    """

    # interpolation baselines computed from the LR map on the same grid
    baselines: tuple[BaselineName, ...] = ("nearest", "bicubic")
    # nominal levels of the calibration plot (central intervals)
    calibration_levels: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    # side of the square SSIM window in HR bins (odd; shrunk for smaller maps); skimage default 7
    ssim_window: int = 7
    # patch side in HR bins used to cut a whole-region truth into patches (0 = the prediction's)
    patch_bins: int = 0
    # number of genes drawn in the gene-map figure (highest mean truth expression first)
    figure_genes: int = 4
    # write PNG figures (matplotlib) next to the tables
    figures: bool = True
    # method whose numbers head the report and against which the others are compared
    reference_method: str = "diffst"
    # extra names of genes to draw in the gene-map figure, when present
    highlight_genes: tuple[str, ...] = field(default_factory=tuple)
