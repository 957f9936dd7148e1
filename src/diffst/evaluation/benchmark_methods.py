"""How ``diffst benchmark`` makes each method's prediction of the held-out region.

Two routes, one interface (:class:`TiledRoute`, :class:`PatchRoute`):

* **transcript-resolved sections** (binned transcripts): every learned method is run exactly as
  ``diffst predict`` runs it — tiles on the section's LR grid, the section's own LR cells and
  image views as inputs — on the tiles that hold a held-out bin (the full model on the whole
  section, for the report's figure and ``prediction.h5ad``);
* **spot-array stores** (``--hr spots``): the store's held-out patches, which sit on the
  section's LR grid, are sampled and stitched (point estimates blended; std, quantiles and
  samples from the patch where a bin is most central).

Either way each method returns a :class:`~diffst.evaluation.scoring.MethodPrediction` of the
region's box, and its intervals can be calibrated on the validation split the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from diffst.evaluation.calibration import ConformalCalibration, conformal_calibration
from diffst.evaluation.region import PatchSet, Region, stitch_patches
from diffst.evaluation.scoring import MethodPrediction, project_prediction
from diffst.keys import BatchKey

__all__ = [
    "PatchDraws",
    "PatchRoute",
    "TiledRoute",
    "patch_stitched_nearest",
    "sample_split",
]

Estimator = Literal["auto", "denoiser", "samples"]


@dataclass(frozen=True)
class PatchDraws:
    """K samples per patch of a store split (count scale).

    ``mean [N, G, P, P]`` is the point prediction (the denoiser's posterior mean or the samples'
    mean), ``samples [N, K, G, P, P]``.
    """

    name: str
    mean: np.ndarray
    samples: np.ndarray
    description: str = ""

    def on_region(self, truth: PatchSet, region: Region) -> MethodPrediction:
        """Stitch into a prediction of ``region`` (built from ``truth``'s patches)."""
        k = self.samples.shape[1]
        lo, hi = np.quantile(self.samples, [0.05, 0.95], axis=1)
        std = self.samples.std(axis=1, ddof=1)
        central = stitch_patches(np.stack([std, lo, hi], axis=1), truth, region, "central")
        samples = stitch_patches(self.samples, truth, region, "central")
        return MethodPrediction(
            self.name, stitch_patches(self.mean, truth, region, "blend"),
            central[0], central[1], central[2], samples, self.description, n_samples=k,
        )  # fmt: skip


def _batch(items: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def sample_split(
    checkpoint: str | Path,
    dataset: Any,
    *,
    name: str,
    n_samples: int,
    sampler: Literal["ddpm", "ddim", "dpmpp"] | None = None,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 4,
    description: str = "",
    on_patch: Callable[[int], None] | None = None,
    mean_estimator: Estimator = "auto",
) -> PatchDraws:
    """Draw ``K`` samples for every patch of a dataset with a trained diffusion checkpoint.

    Parameters
    ----------
    checkpoint
        ``diffst train`` checkpoint (EMA weights are used).
    dataset
        :class:`diffst.data.PatchDataset` (no augmentation) whose normalisation matches the
        checkpoint's.
    n_samples
        K samples per patch; sample ``k`` of patch ``i`` is seeded ``seed + 1000·i + k``.
    mean_estimator
        The point prediction ``mean``, as ``PredictConfig.mean_estimator``: the samples' mean,
        or the denoiser's posterior mean at t = T averaged over K draws seeded like the samples
        (``auto``: the denoiser for v/x0 checkpoints).
    """
    import torch

    from diffst.data import inverse_normalise
    from diffst.diffusion import sample_groups
    from diffst.inference.config import resolve_estimator
    from diffst.runs.checkpoint import load_for_inference

    bundle = load_for_inference(checkpoint, "cpu")
    model: Any = bundle.model
    dcfg = bundle.config.diffusion
    sampler, steps = sampler or dcfg.sampler, steps or dcfg.sampling_steps
    estimator = resolve_estimator(mean_estimator, bundle.schedule.prediction, "mean_estimator")
    norm = dataset.info.normalisation
    out, points = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            idx = list(range(start, min(len(dataset), start + batch_size)))
            batch = _batch([dataset[i] for i in idx])
            cond = model.encode_condition(
                batch[BatchKey.LR], batch[BatchKey.TISSUE], batch[BatchKey.CELLS],
                batch[BatchKey.CELL_SCORE], batch.get(BatchKey.LR_MASK),
            ).repeat(n_samples)  # fmt: skip
            shape = (len(idx) * n_samples, *batch[BatchKey.HR].shape[1:])
            x0, posterior = sample_groups(
                model, bundle.schedule, cond, shape, n_samples, sampler=sampler, steps=steps,
                seeds=[seed + 1000 * i + k for i in idx for k in range(n_samples)],
                device="cpu", clip_denoised=dcfg.clip_denoised,
                posterior_mean=estimator == "denoiser",
            )  # fmt: skip
            scale = batch.get(BatchKey.NORM_SCALE)
            counts = inverse_normalise(x0, norm, None if scale is None else scale[:, None])
            out.append(counts.float().numpy())
            if posterior is not None:
                points.append(inverse_normalise(posterior, norm, scale).float().numpy())
            if on_patch is not None:
                on_patch(len(idx))
    samples = np.concatenate(out).astype(np.float32)
    point = np.concatenate(points).astype(np.float32) if points else samples.mean(axis=1)
    what = "denoiser posterior mean" if estimator == "denoiser" else "mean of the samples"
    text = f"{n_samples} samples per patch, {sampler} {steps} steps; point prediction: {what}"
    return PatchDraws(name, point, samples, ", ".join(x for x in (description, text) if x))


def _calibrate(pred: MethodPrediction, region: Region, source: str) -> ConformalCalibration:
    assert pred.q05 is not None and pred.q95 is not None and pred.std is not None
    return conformal_calibration(
        pred.q05, pred.q95, pred.std, region.hr, region.scored, 0.9, source
    )


class TiledRoute:
    """Learned methods run on ``diffst predict``'s tiles of the evaluated section."""

    def __init__(
        self, sample: Any, region: Region, shape_hr: tuple[int, int], pcfg: Any,
        val: tuple[Any, Region, tuple[int, int]] | None = None,
    ) -> None:  # fmt: skip
        self.sample, self.region, self.pcfg = sample, region, pcfg
        self.mask = _on_section(region, shape_hr)
        self.val = val  # (training sample, validation region, its section shape)
        self.section_maps: dict[str, np.ndarray] = {}  # method → [G, H, W] whole-section map
        self.full: Any = None  # SectionMaps of the full model (whole section)

    def _box(self, region: Region) -> tuple[int, int, int, int]:
        return (*region.origin_bins, *region.shape)

    def _prediction(self, maps: Any, name: str, description: str) -> MethodPrediction:
        from diffst.inference.uncertainty import Stat

        r = self.region
        cut = {s: r.cut(np.nan_to_num(maps.stats[s])) for s in Stat}
        samples = maps.samples if maps.samples is not None else None
        return MethodPrediction(
            name, cut[Stat.MEAN], cut[Stat.STD], cut[Stat.Q05], cut[Stat.Q95], samples,
            description, n_samples=self.pcfg.n_samples,
        )  # fmt: skip

    def diffusion(
        self, checkpoint: Path, name: str, description: str, *, whole: bool = False,
        on_progress: Any = None,
    ) -> tuple[MethodPrediction, MethodPrediction]:  # fmt: skip
        """The method's prediction and the samples' mean as a second prediction."""
        from diffst.inference.maps import predict_maps
        from diffst.inference.uncertainty import Stat

        maps = predict_maps(
            checkpoint, self.sample, self.pcfg, region=None if whole else self.mask,
            box=self._box(self.region), on_progress=on_progress,
        )  # fmt: skip
        if whole:
            self.full = maps
            self.section_maps[name] = maps.stats[Stat.MEAN]
        pred = self._prediction(maps, name, description)
        sample_mean = dataclasses.replace(
            pred, name=f"{name}_sample_mean",
            mean=self.region.cut(np.nan_to_num(maps.stats[Stat.SAMPLE_MEAN])),
            description=f"{name} scored on the mean of its {self.pcfg.n_samples} samples",
        )  # fmt: skip
        return pred, sample_mean

    def calibration(self, checkpoint: Path) -> ConformalCalibration | None:
        """Conformal calibration of the intervals on the validation split's region."""
        from diffst.inference.maps import predict_maps

        if self.val is None:
            return None
        sample, region, shape = self.val
        maps = predict_maps(
            checkpoint, sample, self.pcfg, region=_on_section(region, shape),
            box=self._box(region),
        )  # fmt: skip
        route = TiledRoute(sample, region, shape, self.pcfg)
        pred = route._prediction(maps, "val", "")
        if self.pcfg.project_to_spots:  # intervals calibrated as they are scored and written
            pred = project_prediction(pred, region)
        return _calibrate(pred, region, "validation split, the same tiling")

    def regression(self, checkpoint: Path, train_store: Path, description: str) -> MethodPrediction:
        """The regression network on the same tiles (whole section: it is one pass per tile)."""
        from diffst.evaluation.regression import regression_tiles
        from diffst.inference.maps import predict_maps
        from diffst.inference.uncertainty import Stat

        tile_fn, ctx = regression_tiles(checkpoint, self.sample, self.pcfg, train_store=train_store)
        maps = predict_maps(None, self.sample, self.pcfg, tile_fn=tile_fn, ctx=ctx)
        self.section_maps["regression"] = maps.stats[Stat.MEAN]
        mean = self.region.cut(np.nan_to_num(maps.stats[Stat.MEAN]))
        return MethodPrediction("regression", mean, description=description)


class PatchRoute:
    """Learned methods sampled on the store's held-out patches (spot-array stores)."""

    def __init__(
        self, truth: PatchSet, region: Region, data: Any, cfg: Any, eval_store: Path,
        val: tuple[PatchSet, Region, Any] | None = None,
    ) -> None:  # fmt: skip
        self.truth, self.region, self.data, self.cfg = truth, region, data, cfg
        self.eval_store = Path(eval_store)
        self.val = val  # (validation patches, their region, their dataset)
        self.section_maps: dict[str, np.ndarray] = {}
        self.full: Any = None

    def _draws(self, checkpoint: Path, data: Any, name: str, description: str,
               on_patch: Any = None) -> PatchDraws:  # fmt: skip
        c = self.cfg
        return sample_split(
            checkpoint, data, name=name, n_samples=c.n_samples, sampler=c.sampler,
            steps=c.steps, seed=c.seed, description=description, on_patch=on_patch,
            mean_estimator=c.mean_estimator,
        )  # fmt: skip

    def diffusion(
        self, checkpoint: Path, name: str, description: str, *, whole: bool = False,
        on_progress: Any = None,
    ) -> tuple[MethodPrediction, MethodPrediction]:  # fmt: skip
        """The method's prediction and the samples' mean as a second prediction."""
        draws = self._draws(checkpoint, self.data, name, description, on_progress)
        pred = draws.on_region(self.truth, self.region)
        assert pred.samples is not None
        sample_mean = dataclasses.replace(
            pred, name=f"{name}_sample_mean",
            mean=stitch_patches(draws.samples.mean(axis=1), self.truth, self.region, "blend"),
            description=f"{name} scored on the mean of its {self.cfg.n_samples} samples",
        )  # fmt: skip
        return pred, sample_mean

    def calibration(self, checkpoint: Path) -> ConformalCalibration | None:
        """Conformal calibration of the intervals on the validation split's patches."""
        if self.val is None:
            return None
        truth, region, data = self.val
        pred = self._draws(checkpoint, data, "val", "").on_region(truth, region)
        if self.cfg.project:  # intervals calibrated as they are scored
            pred = project_prediction(pred, region)
        return _calibrate(pred, region, "validation split patches")

    def regression(self, checkpoint: Path, train_store: Path, description: str) -> MethodPrediction:
        """The regression network on the same patches, stitched."""
        from diffst.evaluation.regression import predict_regression

        mean = predict_regression(checkpoint, self.eval_store, "test", train_store=train_store)
        return MethodPrediction(
            "regression", stitch_patches(mean, self.truth, self.region, "blend"),
            description=description,
        )  # fmt: skip


def _on_section(region: Region, shape_hr: tuple[int, int]) -> np.ndarray:
    """The region's scored bins as a mask of the section grid ``shape_hr``."""
    out = np.zeros(shape_hr, dtype=bool)
    r, c = region.origin_bins
    h, w = region.shape
    hh, ww = min(h, shape_hr[0] - r), min(w, shape_hr[1] - c)
    out[r : r + hh, c : c + ww] = region.scored[:hh, :ww]
    return out


def patch_stitched_nearest(region: Region, patch: int, stride: int) -> MethodPrediction:
    """The previous scoring protocol's nearest baseline, for comparison only.

    Windows of ``patch`` bins at every ``stride``-th offset inside the region's box each pool
    *their own* LR window from the truth and are upsampled by nearest and averaged where they
    overlap: with a stride that is not a multiple of the factor this reads LR cells at many
    offsets, i.e. more than one LR grid holds, and flatters every LR-based method.
    """
    from diffst.baselines import nearest_upsample
    from diffst.metrics import pool_sum

    g = len(region.genes)
    h, w = region.shape
    f = region.factor
    total = np.zeros((g, h, w))
    weight = np.zeros((h, w))
    for r in range(0, max(h - patch, 0) + 1, stride):
        for c in range(0, max(w - patch, 0) + 1, stride):
            window = region.hr[:, r : r + patch, c : c + patch]
            if not region.scored[r : r + patch, c : c + patch].any():
                continue
            up = nearest_upsample(pool_sum(window, f), f, window.shape[1:])
            total[:, r : r + patch, c : c + patch] += up
            weight[r : r + patch, c : c + patch] += 1
    mean = np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)
    return MethodPrediction(
        "nearest_patch_stitched", mean.astype(np.float32),
        description=f"previous protocol: {patch}-bin windows every {stride} bins, each pooling "
        "its own LR window (other offsets than the section's LR grid), nearest, averaged",
    )  # fmt: skip
