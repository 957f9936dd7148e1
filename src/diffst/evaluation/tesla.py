"""Adapter to TESLA (Hu et al., Cell Systems 2023) as an external peer on the same inputs.

TESLA is optional (pip package ``TESLAforST``, import name ``TESLA``). When it cannot be
imported the adapter returns a :class:`MethodPrediction` marked *unavailable* with the install
hint — it is never scored as zero.

TESLA imputes genes on a lattice of image "superpixels" from spot-level expression and the image
colour. The adapter feeds it the section's one LR grid — every measured LR cell as a spot
(centre in image pixels, counts per HR unit: the cell's measured-unit mean, as the interpolation
baselines get) — the image as 8-bit RGB and the whole image as the tissue contour, with a
superpixel side of one HR bin; the superpixel values are averaged per HR bin and the section map
is cut to the held-out region.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from diffst.evaluation.region import Region
from diffst.evaluation.scoring import MethodPrediction

__all__ = ["INSTALL_HINT", "tesla_available", "tesla_prediction"]

INSTALL_HINT = (
    "pip install --no-deps TESLAforST==1.2.2 && pip install numba scanpy scikit-learn "
    "opencv-python-headless (its metadata requires the retired `sklearn` package, which fails "
    "to build; the real dependency is scikit-learn)"
)


def tesla_available() -> str | None:
    """``None`` when ``TESLA`` imports, else the reason with the install hint."""
    try:
        importlib.import_module("TESLA")
        importlib.import_module("cv2")
    except ImportError as err:
        return f"TESLA is not installed ({err.name}); install with: {INSTALL_HINT}"
    return None


def _rgb(image: Any) -> np.ndarray:
    px = np.asarray(image.pixels[:, :, :], dtype=np.float64)
    hi = np.percentile(px.reshape(-1, px.shape[2]), 99.5, axis=0)
    unit = np.clip(px / np.maximum(hi, 1e-9), 0, 1)
    if unit.shape[2] == 1:
        unit = np.repeat(unit, 3, axis=2)
    elif unit.shape[2] == 2:
        unit = np.concatenate([unit, unit[:, :, :1]], axis=2)
    return (unit[:, :, :3] * 255).astype(np.uint8)


@contextmanager
def _positional_obs(tesla: Any) -> Iterator[None]:
    """Run TESLA 1.2.2 under the anndata installed here.

    TESLA builds its superpixel table with an integer index and then looks rows of a distance
    table up by ``adata.obs.index[i]``; anndata (≥ 0.8) turns every obs index into strings, so
    the lookup fails (``KeyError: '0'``). Inside this context TESLA's ``AnnData`` returns
    ``obs`` with a positional index wherever the index is the default ``'0', '1', …``; nothing
    else of TESLA changes.
    """
    import anndata as ad
    import pandas as pd

    class PositionalObs(ad.AnnData):  # type: ignore[misc]
        @property
        def obs(self) -> pd.DataFrame:
            frame = ad.AnnData.obs.fget(self)  # type: ignore[attr-defined]
            default = pd.Index([str(i) for i in range(len(frame))])
            return (
                frame.set_axis(pd.RangeIndex(len(frame))) if frame.index.equals(default) else frame
            )

        @obs.setter
        def obs(self, value: pd.DataFrame) -> None:
            ad.AnnData.obs.fset(self, value)  # type: ignore[attr-defined]

    module = importlib.import_module("TESLA.imputation")
    original = getattr(module, "AnnData")  # noqa: B009 (an attribute of a third-party module)
    setattr(module, "AnnData", PositionalObs)  # noqa: B010
    try:
        yield
    finally:
        setattr(module, "AnnData", original)  # noqa: B010


def _run_tesla(sample: Any, region: Region, geometry: Any) -> np.ndarray:
    """TESLA on the whole section → ``[G, H, W]`` counts per HR bin (NaN where no superpixel)."""
    import anndata as ad
    import pandas as pd
    import TESLA  # type: ignore[import-not-found]

    from diffst.baselines import cell_means

    lr, mask, units, _ = region.baseline_input()
    a0, b0 = region.context.origin_cells if region.context is not None else (
        region.origin_bins[0] // region.factor, region.origin_bins[1] // region.factor
    )  # fmt: skip
    means = cell_means(lr, units, mask)
    a, b = np.nonzero(mask)
    x0, y0 = geometry.origin_um
    lr_um = geometry.hr_um * region.factor
    centres_um = np.column_stack([x0 + (b0 + b + 0.5) * lr_um, y0 + (a0 + a + 0.5) * lr_um])
    px = sample.image.um_to_px.apply(centres_um)  # (col, row)
    genes = list(region.genes)
    raw = ad.AnnData(
        X=means[:, a, b].T.astype(np.float32),
        obs=pd.DataFrame(
            {"pixel_x": np.rint(px[:, 1]).astype(int), "pixel_y": np.rint(px[:, 0]).astype(int)}
        ),
        var=pd.DataFrame(index=genes),
    )
    img = _rgb(sample.image)
    h, w = img.shape[:2]
    contour = np.array([[[0, 0]], [[w - 1, 0]], [[w - 1, h - 1]], [[0, h - 1]]], dtype=np.int32)
    res = max(1, round(geometry.hr_um / sample.image.um_per_px))
    with _positional_obs(TESLA):
        enhanced = TESLA.imputation(img=img, raw=raw, cnt=contour, genes=genes, res=res)
    rows_px, cols_px = enhanced.obs["x"].to_numpy(), enhanced.obs["y"].to_numpy()
    um = sample.image.um_to_px.inverse().apply(np.column_stack([cols_px + 0.5, rows_px + 0.5]))
    i = np.floor((um[:, 1] - y0) / geometry.hr_um).astype(int)
    j = np.floor((um[:, 0] - x0) / geometry.hr_um).astype(int)
    hh, ww = geometry.shape_hr
    keep = (i >= 0) & (i < hh) & (j >= 0) & (j < ww)
    values = np.asarray(enhanced[:, genes].X, dtype=np.float64)[keep]
    total = np.zeros((len(genes), hh, ww))
    count = np.zeros((hh, ww))
    np.add.at(count, (i[keep], j[keep]), 1)
    for g in range(len(genes)):
        np.add.at(total[g], (i[keep], j[keep]), values[:, g])
    with np.errstate(invalid="ignore"):
        return total / count


def tesla_prediction(sample: Any, region: Region, geometry: Any) -> MethodPrediction:
    """TESLA's prediction of the held-out region, or an *unavailable* entry with the reason.

    Parameters
    ----------
    sample
        The evaluated section (:class:`~diffst.io.sample.SpatialSample` with its image).
    region
        The held-out region; its LR context (the section's LR grid) is TESLA's input.
    geometry
        :class:`~diffst.sections.binning.GridGeometry` of the section grid (``None``: the
        section grid is not known, TESLA is reported unavailable).
    """
    reason = tesla_available()
    if reason is None and sample.image is None:
        reason = "TESLA needs the section image; the sample has none"
    if reason is None and (geometry is None or region.context is None):
        reason = "TESLA runs on the whole section's LR grid, which this evaluation does not have"
    if reason is not None:
        return MethodPrediction(
            "tesla", None, description="TESLA (Cell Systems 2023)", unavailable=reason
        )
    grid = np.nan_to_num(_run_tesla(sample, region, geometry), nan=0.0)
    return MethodPrediction(
        "tesla", region.cut(grid), description="TESLA imputation from the section's LR cells"
    )
