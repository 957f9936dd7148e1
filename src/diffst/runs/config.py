"""Training configuration: :class:`TrainConfig`, :class:`DataConfig` and :class:`RunConfig`.

A run is described by one :class:`RunConfig` built from a preset (``paper``, ``small``,
``tiny``), an optional YAML file and ``section.key=value`` overrides, in that order
(:func:`resolve_run_config`). Defaults are the paper's values. A resumed run starts from its own
saved configuration instead of a preset, and may change only the fields in
:data:`RESUMABLE_FIELDS` (:func:`config_differences` lists what changed).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from diffst.config import (
    ConfigError,
    apply_overrides,
    from_dict,
    load_preset,
    load_yaml,
    to_dict,
)
from diffst.diffusion.config import DiffusionConfig
from diffst.models.config import ModelConfig

__all__ = [
    "RESUMABLE_FIELDS",
    "DataConfig",
    "RunConfig",
    "TrainConfig",
    "config_differences",
    "resolve_run_config",
    "run_config_from_dict",
]

#: fields a resumed run may change: the run length, logging, validation, checkpointing and
#: where it computes; none of them changes the weights of the steps already done
RESUMABLE_FIELDS: frozenset[str] = frozenset({
    "train.max_steps", "train.log_every", "train.val_every", "train.val_sampler",
    "train.val_steps", "train.val_max_patches", "train.val_samples", "train.val_seed",
    "train.ckpt_every", "train.keep_last", "train.num_workers", "train.compile", "train.device",
    "train.unet_chunk", "data.val_split",
})  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, logging and checkpointing of one training run (paper values by default)."""

    batch_size: int = 4  # patches per micro-batch per process (paper: 4)
    grad_accum: int = 1  # micro-batches per process per optimiser step
    lr: float = 1e-4  # AdamW learning rate (paper: 1e-4)
    weight_decay: float = 1e-5  # AdamW weight decay (paper: 1e-5)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW (β1, β2)
    warmup_steps: int = 0  # linear learning-rate warm-up, optimiser steps
    ema_decay: float = 0.9999  # EMA target decay (paper: 0.9999)
    ema_warmup: bool = True  # effective decay min(decay, (1 + n) / (10 + n))
    grad_clip: float = 1.0  # max global gradient L2 norm; 0 disables clipping
    max_steps: int = 100_000  # optimiser steps of the whole run
    log_every: int = 10  # steps between CSV/TensorBoard rows
    val_every: int = 1000  # steps between validations; 0 disables
    val_sampler: Literal["ddpm", "ddim", "dpmpp"] = "ddim"  # sampler used for validation
    val_steps: int = 10  # sampling steps for validation
    val_max_patches: int = 16  # validation patches sampled (first ones of the split)
    val_samples: int = 1  # samples per patch averaged on the count scale before the PCC
    val_seed: int = 1234  # seed of the validation samples
    ckpt_every: int = 1000  # steps between checkpoints (one is always written at the end)
    keep_last: int = 3  # step_XXXXXXX.pt files kept besides last.pt
    seed: int = 0  # seed of data order, diffusion noise and initial weights
    num_workers: int = 0  # DataLoader worker processes
    amp: Literal["bf16", "none"] = "bf16"  # bf16 autocast where native: CUDA (+ channels_last),
    # CPUs with AVX512-BF16 or AMX; fp32 elsewhere (the run log says which)
    compile: bool = False  # torch.compile the training step
    unet_chunk: int = 0  # patches per UNet pass of a step, same gradient (diffst.training.chunks);
    # 0 = automatic: on a CPU chunks of ≤ 4 MiB of the widest activation, else the whole batch
    device: Literal["auto", "cpu", "cuda"] = "auto"  # compute device
    curriculum: bool = True  # widen the share of cell tiles with training progress

    def __post_init__(self) -> None:
        positive = ("batch_size", "grad_accum", "max_steps", "log_every", "keep_last", "val_steps",
                    "val_samples")  # fmt: skip
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"train.{name}: must be ≥ 1, got {getattr(self, name)}")
        for name in ("val_every", "ckpt_every", "num_workers", "warmup_steps", "val_max_patches",
                     "unet_chunk"):  # fmt: skip
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"train.{name}: must be ≥ 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr: must be > 0, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay: must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip < 0:
            raise ConfigError(f"train.grad_clip: must be ≥ 0, got {self.grad_clip}")


@dataclass(frozen=True)
class DataConfig:
    """Which store splits feed training; normalisation comes from the store manifest."""

    train_split: str = "train"  # split the model is fitted on
    val_split: str = "val"  # split used for validation PCC
    augment: bool = True  # random 90° rotations and flips of training patches


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run; written to ``config.yaml`` and every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)  # network architecture
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)  # schedule and loss
    train: TrainConfig = field(default_factory=TrainConfig)  # optimisation and logging
    data: DataConfig = field(default_factory=DataConfig)  # store splits and augmentation

    def __post_init__(self) -> None:
        if self.diffusion.target == "residual" and not (
            self.model.use_lr and self.model.lr_input_concat
        ):
            raise ConfigError(
                "diffusion.target='residual' diffuses HR − LR map, so it needs model.use_lr and "
                "model.lr_input_concat; set diffusion.target=hr for a model without the LR input"
            )
        if self.diffusion.target == "mean" and not self.model.mean_head:
            raise ConfigError(
                "diffusion.target='mean' diffuses HR − μ, the network's own regression of the HR "
                "map, so it needs model.mean_head=true"
            )


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Strictly build a :class:`RunConfig` from a nested mapping (unknown keys are errors)."""
    return from_dict(RunConfig, data)


def resolve_run_config(
    preset: str | None = "small",
    config_file: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    *,
    base: RunConfig | None = None,
) -> RunConfig:
    """Preset, then YAML file, then ``section.key=value`` overrides → :class:`RunConfig`.

    Parameters
    ----------
    preset
        Name of a shipped preset (``paper``, ``small``, ``tiny``) or ``None`` for defaults.
    config_file
        YAML mapping with any of the sections ``model``, ``diffusion``, ``train``, ``data``.
    overrides
        Strings such as ``"train.lr=3e-4"``; values are parsed as YAML.
    base
        Configuration to start from instead of the defaults (a resumed run's own), with the
        preset, file and overrides applied on top.
    """
    data: dict[str, Any] = to_dict(base) if base is not None else {}
    if preset:
        data = _merge(data, load_preset(preset))
    if config_file is not None:
        data = _merge(data, load_yaml(config_file))
    if overrides:
        data = apply_overrides(data, overrides)
    sections = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(data) - sections)
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; valid: {sorted(sections)}")
    return run_config_from_dict(data)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_differences(old: RunConfig, new: RunConfig) -> list[tuple[str, Any, Any]]:
    """``(section.field, old value, new value)`` for every field that differs, in field order."""
    a, b = to_dict(old), to_dict(new)
    return [
        (f"{section}.{key}", a[section][key], b[section].get(key))
        for section in a
        for key in a[section]
        if a[section][key] != b[section].get(key)
    ]


def run_config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain nested mapping of ``cfg`` (YAML/JSON types)."""
    return to_dict(cfg)
