"""The training loop: ``train(store, out_dir, config) -> TrainResult``.

One optimiser step = ``grad_accum`` micro-batches per process (DDP averages over processes):
condition encoding, hybrid diffusion loss (+ disentangling), backward, gradient clipping,
AdamW, EMA update. With ``train.unet_chunk`` below the batch the UNet passes and their backward
run in chunks of the micro-batch (:mod:`diffst.training.chunks`; same gradient).
``train.amp=bf16`` autocasts to bf16 where it is native (CUDA, and CPUs with AVX512-BF16 or
AMX; elsewhere fp32 with a logged note); channels_last on CUDA. Curriculum progress
``step / max_steps`` is fed to the model before every step. Rank 0 alone logs, validates and
writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from diffst.allocator import tune_allocator
from diffst.config import ConfigError, save_yaml
from diffst.diffusion import LossTerms, NoiseSchedule, training_losses
from diffst.distributed import (
    DistEnv,
    ShardedBatchSampler,
    all_reduce_mean,
    barrier,
    init_distributed,
    micro_batch_seed,
    seed_everything,
    shutdown_distributed,
)
from diffst.io.sample import InputError
from diffst.keys import BatchKey
from diffst.models import DiffSTModel
from diffst.precision import autocast, native_bf16
from diffst.runs.checkpoint import LAST, build_model, load_checkpoint, read_store_meta
from diffst.runs.config import RunConfig
from diffst.training.checkpoint import (
    check_resumable,
    restore_rng_state,
    resume_checkpoint_path,
    training_state,
    write_run_checkpoint,
)
from diffst.training.chunks import chunked_backward, resolve_unet_chunk
from diffst.training.ema import EMA
from diffst.training.logging import RunLogger
from diffst.training.run_folder import check_run_folder, clear_run_folder, remove_stale_temporaries

__all__ = ["TrainResult", "TrainingDivergedError", "train"]

_TERMS = ("total", "simple", "vb", "disentangle", "mean")


def _stacked(terms: LossTerms) -> torch.Tensor:
    """The loss terms as one tensor, in the order of ``_TERMS`` (the log's order)."""
    return torch.stack([getattr(terms, name) for name in _TERMS])


class TrainingDivergedError(RuntimeError):
    """A loss term or the gradient norm became NaN or infinite."""


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`."""

    out_dir: Path  # run folder
    checkpoint: Path  # out_dir/checkpoints/last.pt
    step: int  # optimiser steps done
    loss: float  # total loss of the last step (mean over processes)
    patches_per_s: float  # training throughput over the whole run (all processes)
    val_pcc: float | None  # last validation PCC of the model (count scale, in-mask bins)
    val_pcc_bicubic: float | None  # same PCC for bicubic upsampling of the LR map
    val_pcc_posterior: float | None = None  # same PCC for the posterior-mean estimate (v/x0 nets)
    val_pcc_nearest: float | None = None  # same PCC for nearest upsampling of the LR map
    start_step: int = 0  # step the run started (resumed) from; == step when nothing was left


class _LossModule(nn.Module):
    """Wraps the model so that DDP sees one forward: condition encoding + diffusion loss."""

    def __init__(self, model: DiffSTModel, schedule: NoiseSchedule, config: RunConfig) -> None:
        super().__init__()
        self.model = model
        self.schedule = schedule
        self.diffusion = config.diffusion

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        cond = self.model.encode_condition(
            batch[BatchKey.LR], batch[BatchKey.TISSUE], batch[BatchKey.CELLS],
            batch[BatchKey.CELL_SCORE], batch.get(BatchKey.LR_MASK),
        )  # fmt: skip
        terms: LossTerms = training_losses(
            self.model, self.schedule, batch[BatchKey.HR], cond, batch[BatchKey.MASK],
            self.diffusion, generator,
        )  # fmt: skip
        return _stacked(terms)


@dataclass
class _State:
    """Mutable training state shared by the helpers below."""

    env: DistEnv
    config: RunConfig
    model: DiffSTModel
    ema: EMA
    optimizer: torch.optim.Optimizer
    loss_module: nn.Module
    schedule: NoiseSchedule
    store_meta: dict[str, Any]
    ckpt_dir: Path
    amp: bool  # bf16 autocast in use: train.amp=bf16 and native on the device
    unet_chunk: int  # patches per UNet pass (train.unet_chunk resolved; batch_size = one pass)
    step: int = 0
    epoch: int = 0
    epoch_step: int = 0


def _ema_model(st: _State) -> DiffSTModel:
    return cast(DiffSTModel, st.ema.module)


def _prepare_config(config: RunConfig, meta: dict[str, Any]) -> RunConfig:
    """Take the image view sizes from the store; check that variance settings agree."""
    if config.model.learn_sigma != config.diffusion.learn_sigma:
        raise ConfigError(
            "model.learn_sigma and diffusion.learn_sigma must agree, got "
            f"{config.model.learn_sigma} and {config.diffusion.learn_sigma}"
        )
    model = dataclasses.replace(
        config.model,
        tissue_size=int(meta["tissue_size"]),
        cell_grid=int(meta["cell_grid"]),
        cell_tile_size=int(meta["cell_tile_size"]),
    )
    return dataclasses.replace(config, model=model)


def _build_state(env: DistEnv, config: RunConfig, meta: dict[str, Any], out_dir: Path) -> _State:
    tc = config.train
    seed_everything(tc.seed)  # identical initial weights on every rank
    model = build_model(config, meta).to(env.device)
    amp = tc.amp == "bf16" and native_bf16(env.device)
    if env.device.type == "cuda" and amp:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    ema = EMA(model, decay=tc.ema_decay, warmup=tc.ema_warmup)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay
    )
    schedule = NoiseSchedule.from_config(config.diffusion)
    loss_module: nn.Module = _LossModule(model, schedule, config)
    if env.distributed:
        ids = [env.local_rank] if env.device.type == "cuda" else None
        loss_module = nn.parallel.DistributedDataParallel(loss_module, device_ids=ids)
    if tc.compile:
        loss_module = torch.compile(loss_module)  # type: ignore[assignment]
    chunk = resolve_unet_chunk(
        tc.unet_chunk, config.model, int(meta["hr_size"]), tc.batch_size, env.device,
        distributed=env.distributed, compiled=tc.compile,
    )  # fmt: skip
    return _State(
        env, config, model, ema, optimizer, loss_module, schedule, meta, out_dir / "checkpoints",
        amp, chunk,
    )  # fmt: skip


def _restore(st: _State, state: dict[str, Any]) -> None:
    st.model.load_state_dict(state["model"])
    st.ema.load_state_dict(state["ema"])
    st.optimizer.load_state_dict(state["optimizer"])
    st.step, st.epoch, st.epoch_step = (int(state[k]) for k in ("step", "epoch", "epoch_step"))
    restore_rng_state(state["rng"])


def _lr_at(step: int, tc: Any) -> float:
    if tc.warmup_steps <= 0:
        return float(tc.lr)
    return float(tc.lr) * min(1.0, (step + 1) / tc.warmup_steps)


def _to_device(batch: dict[str, torch.Tensor], st: _State) -> dict[str, torch.Tensor]:
    cuda = st.env.device.type == "cuda"
    out = {k: v.to(st.env.device, non_blocking=cuda) for k, v in batch.items()}
    if cuda and st.amp:
        for key in (BatchKey.HR, BatchKey.TISSUE):
            out[key] = out[key].contiguous(memory_format=torch.channels_last)
    return out


def _optimiser_step(st: _State, micro_batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """One optimiser step over this rank's micro-batches; returns the terms + grad norm."""
    tc = st.config.train
    for group in st.optimizer.param_groups:
        group["lr"] = _lr_at(st.step, tc)
    st.model.set_training_progress(st.step / tc.max_steps if tc.curriculum else 1.0)
    st.optimizer.zero_grad(set_to_none=True)
    terms = torch.zeros(len(_TERMS), device=st.env.device)
    for a, batch in enumerate(micro_batches):
        micro = st.env.rank * tc.grad_accum + a
        gen = torch.Generator(st.env.device).manual_seed(micro_batch_seed(tc.seed, st.step, micro))
        last = a == len(micro_batches) - 1
        sync = (
            nullcontext() if last or not st.env.distributed else cast(Any, st.loss_module).no_sync()
        )
        with sync, autocast(st.env.device, st.amp):
            if st.unet_chunk < len(batch[BatchKey.HR]):
                out = _chunked_step(st, _to_device(batch, st), gen)
            else:
                out = st.loss_module(_to_device(batch, st), gen).float()
                (out[0] / tc.grad_accum).backward()
        terms += out.detach() / tc.grad_accum
    terms = all_reduce_mean(terms)
    _check_finite(st, terms, "loss term", _TERMS)
    max_norm = tc.grad_clip if tc.grad_clip > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(st.model.parameters(), max_norm)
    _check_finite(st, grad_norm.reshape(1).float(), "gradient norm", ("grad_norm",))
    st.optimizer.step()
    st.ema.update(st.model)
    return torch.cat([terms, grad_norm.reshape(1).float()])


def _chunked_step(st: _State, batch: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
    """The loss terms of one micro-batch, back-propagated with the UNet in chunks."""
    t = chunked_backward(
        st.model, st.schedule, batch[BatchKey.HR], batch[BatchKey.MASK], st.config.diffusion,
        st.unet_chunk, lr=batch[BatchKey.LR], tissue=batch[BatchKey.TISSUE],
        cells=batch[BatchKey.CELLS], cell_score=batch[BatchKey.CELL_SCORE],
        lr_mask=batch.get(BatchKey.LR_MASK), generator=gen, scale=1.0 / st.config.train.grad_accum,
    )  # fmt: skip
    return _stacked(t).float()


def _check_finite(st: _State, values: torch.Tensor, what: str, names: tuple[str, ...]) -> None:
    bad = [n for n, v in zip(names, values.tolist(), strict=True) if not math.isfinite(v)]
    if bad:
        last = st.ckpt_dir / LAST
        kept = f"last good checkpoint: {last}" if last.is_file() else "no checkpoint was written"
        raise TrainingDivergedError(
            f"training diverged at step {st.step + 1}: non-finite {what} {bad} "
            f"(values {values.tolist()}); stopped without saving; {kept}"
        )


def _save(st: _State) -> Path | None:
    path = None
    if st.env.is_main:
        _ema_model(st).set_training_progress(min(1.0, st.step / st.config.train.max_steps))
        state = training_state(
            st.model, st.ema, st.optimizer, (st.step, st.epoch, st.epoch_step), st.config,
            st.store_meta,
        )  # fmt: skip
        path = write_run_checkpoint(state, st.ckpt_dir, st.config.train.keep_last)
    barrier()
    return path


def _open_dataset(store: Path, split: str, config: RunConfig, augment: bool) -> Any:
    from diffst.data import PatchDataset

    return PatchDataset(store, split, augment=augment, seed=config.train.seed)


def _check_split_size(n_items: int, store: Path, config: RunConfig, world_size: int) -> None:
    tc = config.train
    split_dir = store / config.data.train_split
    if n_items == 0:
        raise InputError(f"{split_dir}: split '{config.data.train_split}' holds no patches")
    global_batch = tc.batch_size * tc.grad_accum * world_size
    if n_items < global_batch:
        raise InputError(
            f"{split_dir}: {n_items} patches are too few for one global batch of {global_batch} "
            f"(train.batch_size={tc.batch_size} × train.grad_accum={tc.grad_accum} × "
            f"{world_size} process(es)); lower train.batch_size or prepare more patches"
        )


@torch.no_grad()
def validate(
    model: DiffSTModel, schedule: NoiseSchedule, dataset: Any, config: RunConfig,
    store_meta: dict[str, Any], device: torch.device,
) -> dict[str, float]:  # fmt: skip
    """PCC of the model's predictions and of LR interpolation against the truth, count scale.

    Uses the first ``train.val_max_patches`` patches and ``train.val_samples`` draws per patch
    (seeds from ``val_seed``, patch index and draw). Reported, each as the mean over genes of the
    per-gene PCC over the in-mask HR bins of all patches pooled:

    * ``val_pcc``: the mean of complete samples (sampler ``train.val_sampler``,
      ``train.val_steps`` steps), mapped back to counts and averaged;
    * ``val_pcc_posterior`` (v- and x0-networks only, else NaN): the network's posterior-mean
      estimate, :func:`~diffst.diffusion.posterior_mean_draws` averaged on the model scale;
    * ``val_pcc_bicubic`` and ``val_pcc_nearest``: bicubic and nearest upsampling of the LR map.
    """
    from diffst.baselines import bicubic_upsample, nearest_upsample
    from diffst.data.transforms import NormStats, inverse_normalise
    from diffst.diffusion import sample_groups
    from diffst.metrics import pearson_per_gene

    tc = config.train
    n = min(len(dataset), tc.val_max_patches)
    factor = int(store_meta["geometry"]["factor"])
    stats = NormStats.from_dict(store_meta["normalisation"])
    with_posterior = schedule.prediction != "eps"
    preds: dict[str, list[np.ndarray]] = {"": [], "_posterior": [], "_bicubic": [], "_nearest": []}
    truths, masks = [], []
    for start in range(0, n, tc.batch_size):
        idx = list(range(start, min(n, start + tc.batch_size)))
        items = [dataset[i] for i in idx]
        batch = {k: torch.stack([it[k] for it in items]).to(device) for k in items[0]}
        cond = model.encode_condition(
            batch[BatchKey.LR], batch[BatchKey.TISSUE], batch[BatchKey.CELLS],
            batch[BatchKey.CELL_SCORE], batch.get(BatchKey.LR_MASK),
        )  # fmt: skip
        k, shape = tc.val_samples, tuple(batch[BatchKey.HR].shape)
        samples, posterior = sample_groups(
            model, schedule, cond.repeat(k), (shape[0] * k, *shape[1:]), k,
            sampler=tc.val_sampler, steps=tc.val_steps,
            seeds=[tc.val_seed + i * k + j for i in idx for j in range(k)], device=device,
            clip_denoised=config.diffusion.clip_denoised, posterior_mean=with_posterior,
        )  # fmt: skip
        scale = batch.get(BatchKey.NORM_SCALE)
        counts = inverse_normalise(samples, stats, None if scale is None else scale[:, None])
        preds[""] += list(counts.mean(1).float().cpu().numpy())
        if posterior is not None:
            preds["_posterior"] += list(
                inverse_normalise(posterior, stats, scale).float().cpu().numpy()
            )
        truth = batch[BatchKey.HR_COUNTS].cpu().numpy()
        truths += list(truth)
        masks += list(batch[BatchKey.MASK][:, 0].cpu().numpy() > 0)
        lr = batch[BatchKey.LR_COUNTS].cpu().numpy()
        preds["_bicubic"] += [bicubic_upsample(x, factor, truth.shape[-2:]) for x in lr]
        preds["_nearest"] += [nearest_upsample(x, factor, truth.shape[-2:]) for x in lr]
    truth_all, mask_all = np.concatenate(truths, -1), np.concatenate(masks, -1)
    out = {"val_patches": float(n)}
    for suffix, values in preds.items():
        pcc = (
            pearson_per_gene(np.concatenate(values, -1), truth_all, mask_all)
            if values
            else np.array([np.nan])
        )
        out[f"val_pcc{suffix}"] = float(np.nanmean(pcc)) if np.isfinite(pcc).any() else float("nan")
    return out


def format_validation(val: dict[str, float]) -> str:
    """One line with the validation PCCs of :func:`validate`."""
    posterior = val.get("val_pcc_posterior", float("nan"))
    model = f"val PCC samples {val['val_pcc']:.4f}"
    if np.isfinite(posterior):
        model += f", posterior mean {posterior:.4f}"
    patches = val.get("val_patches", float("nan"))
    where = f"; {int(patches)} patches" if np.isfinite(patches) else ""
    return (
        f"{model} (LR bicubic {val['val_pcc_bicubic']:.4f}, "
        f"nearest {val.get('val_pcc_nearest', float('nan')):.4f}{where})"
    )


def train(
    store_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: RunConfig,
    *,
    resume: bool | str | os.PathLike[str] = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train the Diff-ST model on a prepared patch store.

    Parameters
    ----------
    store_dir
        Store written by ``diffst prepare`` (``manifest.json``, ``train/``, ``val/``).
    out_dir
        Run folder: ``config.yaml``, ``log.csv``, ``tensorboard/``, ``checkpoints/``.
    config
        Resolved run configuration; image view sizes are taken from the store.
    resume
        ``True`` continues from ``out_dir/checkpoints/last.pt``; a path continues from that
        checkpoint. Model, optimiser, EMA, step, RNG states and data order are restored.
        ``config`` must be the checkpoint's configuration
        (:func:`~diffst.training.checkpoint.saved_run_config`) except for the fields of
        :data:`~diffst.runs.config.RESUMABLE_FIELDS`, and ``store_dir`` the store it was
        trained on. A run already at ``train.max_steps`` returns at once, writing nothing.
    overwrite
        Start a new run in ``out_dir`` even if it holds an earlier run's checkpoints. Without it
        a new run refuses such a folder. An earlier run's checkpoints, log, TensorBoard events
        and config are removed before a new run starts.
    progress
        Show a progress bar (rank 0).

    Returns
    -------
    TrainResult
        Final step, loss, throughput (patches/s) and validation PCCs.

    Raises
    ------
    InputError
        Missing/corrupted store or checkpoint, empty split, too few patches, a checkpoint
        trained on another store (other genes, geometry or manifest).
    ConfigError
        ``out_dir`` holds a run's checkpoints and neither ``resume`` nor ``overwrite`` is
        given; a resumed run's configuration changes a field that is not resumable.
    TrainingDivergedError
        A loss term or the gradient norm became NaN/Inf (the last good checkpoint is kept).
    """
    tune_allocator()
    env = init_distributed(config.train.device)
    try:
        return _run(env, Path(store_dir), Path(out_dir), config, resume, overwrite, progress)
    finally:
        if env.distributed:
            shutdown_distributed()


def _run(
    env: DistEnv, store: Path, out_dir: Path, config: RunConfig,
    resume: bool | str | os.PathLike[str], overwrite: bool, progress: bool,
) -> TrainResult:  # fmt: skip
    clear = check_run_folder(
        out_dir, resume=resume is not False and resume is not None, overwrite=overwrite
    )
    meta = read_store_meta(
        store, config.model.adjacency_kind, config.data.train_split, config.model.graph_topk
    )
    config = _prepare_config(config, meta)
    tc = config.train
    train_ds = _open_dataset(store, config.data.train_split, config, augment=config.data.augment)
    _check_split_size(len(train_ds), store, config, env.world_size)
    val_ds = None
    if tc.val_every > 0 and (store / config.data.val_split).is_dir():
        val_ds = _open_dataset(store, config.data.val_split, config, augment=False)
    resume_path = resume_checkpoint_path(resume, out_dir / "checkpoints")
    saved = load_checkpoint(resume_path) if resume_path is not None else None
    changes = check_resumable(saved, config, meta) if saved is not None else []
    if saved is not None and int(saved["step"]) >= tc.max_steps:
        return _finished(out_dir, saved, Path(resume_path or ""))
    barrier()  # every rank has looked at the folder before rank 0 writes into it
    if env.is_main:
        if clear:
            clear_run_folder(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out_dir)
        save_yaml(config, out_dir / "config.yaml")
    st = _build_state(env, config, meta, out_dir)
    if saved is not None:
        _restore(st, saved)
    else:
        seed_everything(tc.seed, env.rank)
    logger = RunLogger(
        out_dir, enabled=env.is_main, progress=progress, total_steps=tc.max_steps,
        start_step=st.step,
    )  # fmt: skip
    with logger:
        if saved is not None:
            logger.message(
                f"resuming {resume_path} at step {st.step} of {tc.max_steps}"
                + (f" with {'; '.join(changes)}" if changes else "")
            )
        if tc.amp == "bf16":
            logger.message(
                f"arithmetic: bf16 autocast on {env.device}"
                if st.amp
                else f"arithmetic: fp32 (train.amp=bf16, but {env.device} has no native bf16: "
                "a CUDA GPU from Ampere on, or a CPU with AVX512-BF16 or AMX)"
            )
        if st.unet_chunk < tc.batch_size:
            logger.message(
                f"UNet passes in chunks of {st.unet_chunk} of the {tc.batch_size} patches of a "
                "micro-batch (train.unet_chunk; same gradient)"
            )
        return _loop(st, train_ds, val_ds, logger, out_dir)


def _finished(out_dir: Path, saved: dict[str, Any], checkpoint: Path) -> TrainResult:
    """The result of resuming a run that has no step left (nothing is written)."""
    step = int(saved["step"])
    return TrainResult(
        out_dir=out_dir, checkpoint=checkpoint, step=step, loss=float("nan"), patches_per_s=0.0,
        val_pcc=None, val_pcc_bicubic=None, start_step=step,
    )  # fmt: skip


def _loop(st: _State, train_ds: Any, val_ds: Any, logger: RunLogger, out_dir: Path) -> TrainResult:
    tc, env = st.config.train, st.env
    start_step, start_time = st.step, time.perf_counter()
    window = _Window(time.perf_counter(), st.step)
    values: dict[str, float] = {}
    last_val: dict[str, float] = {}
    while st.step < tc.max_steps:
        sampler = ShardedBatchSampler(
            len(train_ds), tc.batch_size, env.world_size, env.rank, tc.grad_accum, tc.seed,
            st.epoch, st.epoch_step,
        )  # fmt: skip
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(st.epoch)
        loader = DataLoader(
            train_ds, batch_sampler=sampler, num_workers=tc.num_workers,
            pin_memory=env.device.type == "cuda",
        )  # fmt: skip
        batches = iter(loader)
        while st.epoch_step < sampler.steps_per_epoch and st.step < tc.max_steps:
            micro = [next(batches) for _ in range(tc.grad_accum)]
            out = _optimiser_step(st, micro).tolist()
            st.step += 1
            st.epoch_step += 1
            values = dict(zip(_LOG_TERMS, out, strict=True))
            last_val = _after_step(st, values, val_ds, logger, window) or last_val
        if st.epoch_step >= sampler.steps_per_epoch:
            st.epoch, st.epoch_step = st.epoch + 1, 0
    if st.step == start_step:
        _save(st)
    elapsed = max(time.perf_counter() - start_time, 1e-9)
    patches = (st.step - start_step) * tc.batch_size * tc.grad_accum * env.world_size
    return TrainResult(
        out_dir=out_dir,
        checkpoint=st.ckpt_dir / LAST,
        step=st.step,
        loss=values.get("loss", float("nan")),
        patches_per_s=patches / elapsed,
        val_pcc=last_val.get("val_pcc"),
        val_pcc_bicubic=last_val.get("val_pcc_bicubic"),
        val_pcc_posterior=last_val.get("val_pcc_posterior"),
        val_pcc_nearest=last_val.get("val_pcc_nearest"),
        start_step=start_step,
    )


_LOG_TERMS = ("loss", "loss_simple", "loss_vb", "loss_disentangle", "loss_mean", "grad_norm")


@dataclass
class _Window:
    """Start of the current throughput window."""

    time: float
    step: int


def _after_step(
    st: _State, values: dict[str, float], val_ds: Any, logger: RunLogger, window: _Window
) -> dict[str, float] | None:
    """Logging, validation and checkpointing after optimiser step ``st.step``.

    Throughput counts training time only: the window restarts after validation and saving.
    """
    tc = st.config.train
    final = st.step == tc.max_steps
    global_batch = tc.batch_size * tc.grad_accum * st.env.world_size
    rate = (st.step - window.step) * global_batch / max(time.perf_counter() - window.time, 1e-9)
    val: dict[str, float] | None = None
    if val_ds is not None and len(val_ds) > 0 and (final or st.step % tc.val_every == 0):
        val = _validate_rank0(st, val_ds, logger)
    if final or st.step % tc.log_every == 0 or val is not None:
        row = {**values, "epoch": st.epoch, "lr": _lr_at(st.step - 1, tc), "patches_per_s": rate,
               "ema_decay": st.ema.current_decay(), **(val or {})}  # fmt: skip
        logger.log(st.step, row)
        window.step, window.time = st.step, time.perf_counter()
    logger.advance(st.step, f"loss {values['loss']:.4f}")
    if final or (tc.ckpt_every > 0 and st.step % tc.ckpt_every == 0):
        _save(st)
        window.step, window.time = st.step, time.perf_counter()
    return val


def _validate_rank0(st: _State, val_ds: Any, logger: RunLogger) -> dict[str, float]:
    """Validation on rank 0 with the EMA weights; the other ranks wait."""
    tc = st.config.train
    val: dict[str, float] = {}
    if st.env.is_main:
        _ema_model(st).set_training_progress(st.step / tc.max_steps if tc.curriculum else 1.0)
        val = validate(_ema_model(st), st.schedule, val_ds, st.config, st.store_meta, st.env.device)
        logger.message(f"step {st.step}: {format_validation(val)}")
    barrier()
    return val
