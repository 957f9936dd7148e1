"""Stain normalisation of H&E views (Reinhard et al. 2001, colour transfer in CIELAB).

Each channel of CIELAB is shifted and scaled so that the tissue pixels of a section have the
mean and standard deviation of a reference: the training image, whose statistics the store
manifest and therefore every checkpoint carry. One transform per section — statistics from a
thumbnail of the whole section, after the views' per-channel intensity range — is applied to
every view cut from it, in ``prepare`` and ``predict`` alike, through
:func:`diffst.sections.views.image_views`. Libraries that normalise an image by statistics of that
very image (torchstain, staintools) would normalise each 16-px cell tile on its own and erase the
differences between cells the model reads; the colour conversions are scikit-image's.

Only 3-channel brightfield images (H&E) are normalised; fluorescence has no stain colours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from diffst.config import ConfigError

__all__ = ["StainStats", "StainTransform", "stain_stats"]

#: CIELAB lightness above which a pixel is glass / background, not tissue
_BACKGROUND_L = 88.0
#: fewer tissue pixels than this share of the thumbnail: use every pixel
_MIN_TISSUE_SHARE = 0.01


@dataclass(frozen=True)
class StainStats:
    """CIELAB mean and standard deviation (L, a, b) of a section's tissue pixels."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "stain reference") -> StainStats:
        try:
            mean, std = tuple(map(float, data["mean"])), tuple(map(float, data["std"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{where}: fields mean/std (3 numbers each) needed ({err})") from None
        if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
            raise ConfigError(f"{where}: mean and std need 3 values, std > 0; got {data}")
        return cls(mean, std)  # type: ignore[arg-type]


def _lab(rgb_uint8: np.ndarray) -> np.ndarray:
    """``[..., 3]`` uint8 RGB → float CIELAB."""
    from skimage.color import rgb2lab

    return np.asarray(rgb2lab(rgb_uint8.astype(np.float32) / 255.0), dtype=np.float64)


def stain_stats(rgb_uint8: np.ndarray) -> StainStats:
    """Statistics of an ``[H, W, 3]`` uint8 RGB image (a section thumbnail, as
    :func:`diffst.sections.views.section_stain` passes it): tissue pixels only (CIELAB L below
    the glass level), every pixel when hardly any is tissue."""
    if rgb_uint8.ndim != 3 or rgb_uint8.shape[-1] != 3:
        raise ConfigError(f"stain normalisation needs an RGB image, got shape {rgb_uint8.shape}")
    lab = _lab(np.ascontiguousarray(rgb_uint8)).reshape(-1, 3)
    tissue = lab[:, 0] < _BACKGROUND_L
    if tissue.mean() < _MIN_TISSUE_SHARE:
        tissue[:] = True
    pixels = lab[tissue]
    std = np.maximum(pixels.std(axis=0), 1e-3)
    return StainStats(tuple(pixels.mean(axis=0)), tuple(std))  # type: ignore[arg-type]


@dataclass(frozen=True)
class StainTransform:
    """Reinhard transfer from a section's statistics to a reference (``method`` is recorded)."""

    source: StainStats
    reference: StainStats
    method: str = "reinhard"

    def __call__(self, views: np.ndarray) -> np.ndarray:
        """``[..., 3, H, W]`` uint8 views (channels first) → normalised, same shape and dtype."""
        from skimage.color import lab2rgb

        if views.shape[-3] != 3:
            raise ConfigError(f"stain normalisation needs 3 channels, got {views.shape[-3]}")
        rgb = np.moveaxis(views, -3, -1)
        lab = _lab(rgb)
        mu_s, sd_s = np.asarray(self.source.mean), np.asarray(self.source.std)
        mu_r, sd_r = np.asarray(self.reference.mean), np.asarray(self.reference.std)
        lab = (lab - mu_s) / sd_s * sd_r + mu_r
        lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
        out = np.clip(np.rint(lab2rgb(lab) * 255.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.moveaxis(out, -1, -3))
