"""The "no diffusion" baseline: Diff-ST's conditioning encoders and UNet as a direct regressor.

The network is :class:`diffst.models.DiffSTModel` with the same configuration as the diffusion
model (gene-graph LR encoder, histology encoders, fusion, conditional UNet); it is called with a
zero input map at timestep 0 and its first ``G`` output channels are read as the normalised HR
map. It is trained with the masked mean-squared error against the normalised HR patches — one
deterministic answer per input, so the comparison shows what the generative objective adds. Like
the diffusion model it is evaluated with an exponential moving average of its weights (the run
configuration's ``train.ema_decay``), so neither side gains from weight averaging alone.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from diffst.config import ConfigError
from diffst.keys import BatchKey

if TYPE_CHECKING:
    from diffst.models import DiffSTModel

__all__ = [
    "RegressionConfig",
    "RegressionNetwork",
    "predict_regression",
    "regression_tiles",
    "train_regression",
]


@dataclass(frozen=True)
class RegressionConfig:
    """Optimisation of the regression baseline (defaults match the ``small`` preset's)."""

    steps: int = 400  # optimiser steps
    batch_size: int = 8  # patches per step
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-5  # AdamW weight decay
    grad_clip: float = 1.0  # max global gradient L2 norm (0 = off)
    augment: bool = True  # random 90° rotations and flips of training patches
    seed: int = 0  # seed of weights and data order
    snapshot_every: int = 0  # also save the weights every N steps as <out>.step<N>.pt (0: off)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(
                f"regression: steps, batch_size and lr must be positive, got {self.steps}, "
                f"{self.batch_size}, {self.lr}"
            )


class RegressionNetwork(nn.Module):
    """Direct predictor ``(LR, tissue, cells) → normalised HR [B, G, H, W]``.

    Parameters
    ----------
    model
        A :class:`~diffst.models.DiffSTModel` (its encoders and UNet are reused as they are).
    """

    def __init__(self, model: DiffSTModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Prediction ``[B, G, H, W]`` on the normalised scale (targets ≈ [-1, 1])."""
        hr = batch[BatchKey.HR]
        return self.from_inputs(
            tuple(hr.shape), batch[BatchKey.LR], batch.get(BatchKey.TISSUE),
            batch.get(BatchKey.CELLS), batch.get(BatchKey.CELL_SCORE), batch.get(BatchKey.LR_MASK),
        )  # fmt: skip

    def from_inputs(
        self,
        shape: tuple[int, ...],
        lr: torch.Tensor,
        tissue: torch.Tensor | None = None,
        cells: torch.Tensor | None = None,
        cell_score: torch.Tensor | None = None,
        lr_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Prediction ``[B, G, H, W]`` (``shape``) from the conditioning inputs alone."""
        cond = self.model.encode_condition(lr, tissue, cells, cell_score, lr_mask)
        zeros = torch.zeros(shape, device=lr.device)
        t = torch.zeros(shape[0], dtype=torch.long, device=lr.device)
        return self.model(zeros, t, cond).prediction[:, : shape[1]]


def _build(store: Path, run_config: Any) -> tuple[RegressionNetwork, dict[str, Any]]:
    from diffst.runs.checkpoint import build_model, read_store_meta

    meta = read_store_meta(
        store, run_config.model.adjacency_kind, run_config.data.train_split,
        run_config.model.graph_topk,
    )  # fmt: skip
    # the twin is the denoiser's network as a plain regressor: it is what the mean pass of
    # model.mean_head computes, so it is built without one; its diffusion section is never read,
    # and "hr" (no offset) is the target valid for every model configuration
    model_cfg = dataclasses.replace(
        run_config.model,
        tissue_size=int(meta["tissue_size"]),
        cell_grid=int(meta["cell_grid"]),
        cell_tile_size=int(meta["cell_tile_size"]),
        mean_head=False,
    )
    diffusion = dataclasses.replace(run_config.diffusion, target="hr")
    config = dataclasses.replace(run_config, model=model_cfg, diffusion=diffusion)
    return RegressionNetwork(build_model(config, meta)), meta


def _save(
    net: RegressionNetwork, run_config: Any, cfg: RegressionConfig, store: Path, out: Path
) -> None:
    """Write the regression weights atomically (curriculum at its final share, as evaluated)."""
    from diffst.config import to_dict

    net.model.set_training_progress(1.0)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    state = {
        "weights": net.state_dict(),
        "run_config": to_dict(run_config),
        "regression": to_dict(cfg),
        "store": str(store),
    }
    torch.save(state, tmp)
    os.replace(tmp, out)


def _masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.expand_as(target)
    return ((pred - target) ** 2 * m).sum() / m.sum().clamp_min(1.0)


def _batches(n: int, cfg: RegressionConfig) -> Callable[[int], list[int]]:
    rng = np.random.default_rng(cfg.seed)
    order: list[int] = []

    def next_batch(_: int) -> list[int]:
        nonlocal order
        if len(order) < cfg.batch_size:
            order += rng.permutation(n).tolist()
        out, order = order[: cfg.batch_size], order[cfg.batch_size :]
        return out

    return next_batch


def train_regression(
    store: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    run_config: Any,
    cfg: RegressionConfig | None = None,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Fit the regression baseline on the store's training split; save its weights.

    Parameters
    ----------
    store
        Prepared store.
    out_path
        ``.pt`` file written atomically: ``{"weights", "run_config", "regression", "store"}``.
    run_config
        :class:`diffst.runs.config.RunConfig` whose ``model`` section defines the encoders.
    cfg
        Optimisation settings.
    on_step
        Called after every step with ``(step, loss)`` (progress bars).

    Returns
    -------
    The checkpoint path.
    """
    from diffst.allocator import tune_allocator
    from diffst.data import PatchDataset
    from diffst.training.ema import EMA

    tune_allocator()
    cfg = cfg or RegressionConfig()
    torch.manual_seed(cfg.seed)
    store = Path(store)
    net, _ = _build(store, run_config)
    data = PatchDataset(store, run_config.data.train_split, augment=cfg.augment, seed=cfg.seed)
    if len(data) == 0:
        raise ConfigError(f"{store}: the training split holds no patches")
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(net, decay=run_config.train.ema_decay)
    next_batch = _batches(len(data), cfg)
    net.train()
    curriculum = run_config.train.curriculum
    for step in range(cfg.steps):
        # the same tile curriculum as the diffusion model, so both end on all the cell tiles
        net.model.set_training_progress(step / cfg.steps if curriculum else 1.0)
        items = [data[i] for i in next_batch(step)]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        loss = _masked_mse(net(batch), batch[BatchKey.HR], batch[BatchKey.MASK])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(net)
        if on_step is not None:
            on_step(step + 1, float(loss.detach()))
        if cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0 and step + 1 < cfg.steps:
            snap = Path(out_path).with_suffix(f".step{step + 1}.pt")
            _save(_averaged(ema), run_config, cfg, store, snap)
    out = Path(out_path)
    _save(_averaged(ema), run_config, cfg, store, out)
    return out


def _averaged(ema: Any) -> RegressionNetwork:
    net = ema.module
    assert isinstance(net, RegressionNetwork)
    return net


@torch.no_grad()
def predict_regression(
    checkpoint: str | os.PathLike[str],
    store: str | os.PathLike[str],
    split: str = "test",
    *,
    train_store: str | os.PathLike[str] | None = None,
    batch_size: int = 8,
) -> np.ndarray:
    """Regression predictions for every patch of ``split``, on the count scale.

    Parameters
    ----------
    checkpoint
        File written by :func:`train_regression`.
    store, split
        Patches to predict.
    train_store
        Store the network was trained on (its adjacency and normalisation are used); default
        ``store``. Set it when predicting a held-out section prepared separately.

    Returns
    -------
    ``[N, G, P, P]`` float32 counts per HR bin (inverse of the training normalisation).
    """
    from diffst.data import PatchDataset, inverse_normalise
    from diffst.data.transforms import NormStats
    from diffst.runs.config import run_config_from_dict

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    run_config = run_config_from_dict(state["run_config"])
    net, meta = _build(Path(train_store or store), run_config)
    net.load_state_dict(state["weights"])
    net.eval()
    norm = meta["normalisation"]
    stats = norm if isinstance(norm, NormStats) else NormStats.from_dict(norm)
    data = PatchDataset(store, split, augment=False)
    data.info = dataclasses.replace(data.info, normalisation=stats)
    out = []
    for start in range(0, len(data), batch_size):
        items = [data[i] for i in range(start, min(len(data), start + batch_size))]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        x = net(batch).clamp(-1.0, 1.0)  # the range the diffusion sampler clips to
        counts = inverse_normalise(x, stats, batch.get(BatchKey.NORM_SCALE))
        out.append(counts.float().numpy())
    return np.concatenate(out).astype(np.float32)


def _load(checkpoint: str | os.PathLike[str], train_store: str | os.PathLike[str] | None):
    from diffst.runs.config import run_config_from_dict

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    run_config = run_config_from_dict(state["run_config"])
    net, meta = _build(Path(train_store or state["store"]), run_config)
    net.load_state_dict(state["weights"])
    net.eval()
    net.model.set_training_progress(1.0)
    return net, meta, run_config


def regression_tiles(
    checkpoint: str | os.PathLike[str],
    sample: Any,
    cfg: Any = None,
    *,
    train_store: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any]:
    """The regression network on the tiles of ``diffst predict``: ``(tile_fn, ctx)`` for
    :func:`diffst.inference.maps.predict_maps`.

    The section inputs, the tiles (on the section's LR grid) and the image views are exactly
    those the diffusion model is predicted from; each tile's statistics are the network's map
    (std 0, both quantiles equal to it).
    """
    from diffst.data import inverse_normalise
    from diffst.inference.config import PredictConfig
    from diffst.inference.setup import tile_context
    from diffst.inference.tiled import tile_batch

    cfg = cfg or PredictConfig()
    net, meta, run_config = _load(checkpoint, train_store)
    meta = {**meta, "normalisation": _norm_dict(meta["normalisation"])}
    ctx = tile_context(meta, run_config.model.use_histology, sample, cfg, checkpoint)
    stats = ctx.norm

    @torch.no_grad()
    def tile_fn(origins: np.ndarray, _index: np.ndarray) -> tuple[np.ndarray, None]:
        batch = tile_batch(ctx, origins, torch.device("cpu"))
        shape = (len(origins), ctx.n_genes, ctx.patch, ctx.patch)
        x = net.from_inputs(
            shape, batch["lr"], batch.get("tissue"), batch.get("cells"), batch.get("cell_score"),
            batch.get("lr_mask"),
        ).clamp(-1.0, 1.0)  # fmt: skip  # the range the diffusion sampler clips to
        counts = inverse_normalise(x, stats).float().numpy()
        zero = np.zeros_like(counts)
        return np.stack([counts, zero, counts, counts, counts], axis=1), None

    return tile_fn, ctx


def _norm_dict(norm: Any) -> dict[str, Any]:
    from diffst.data.transforms import NormStats

    return norm.to_dict() if isinstance(norm, NormStats) else dict(norm)
