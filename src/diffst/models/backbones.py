"""Optional external histology backbones: timm models and TorchScript files, local only.

Nothing is ever downloaded: a timm backbone is built without pretrained weights and then loads
the user's local weights file; a TorchScript backbone is loaded with :func:`torch.jit.load`.
``timm`` is imported lazily, only when such a backbone is requested.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffst.config import ConfigError
from diffst.models.config import parse_backbone

__all__ = ["ExternalBackbone", "build_backbone"]


class ExternalBackbone(nn.Module):
    """Wraps a feature extractor so that it maps ``[B, C, H, W] → [B, D, h, w]``.

    Feature lists (timm ``features_only``) give their last map; ``[B, D]`` outputs become
    ``[B, D, 1, 1]``. When frozen, parameters need no gradient and the module stays in eval mode.
    """

    def __init__(self, module: nn.Module, *, trainable: bool, probe: torch.Tensor) -> None:
        super().__init__()
        self.module = module
        self.trainable = trainable
        if not trainable:
            for p in self.module.parameters():
                p.requires_grad_(False)
            self.module.eval()
        try:
            with torch.no_grad():
                self.out_channels = int(self._features(probe).shape[1])
        except RuntimeError as err:
            raise ConfigError(
                f"model.backbone: fails on an image of shape {tuple(probe.shape)} "
                f"([1, image_channels, cell_tile_size, cell_tile_size]): {err}"
            ) from None

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        out: Any = self.module(x)
        if isinstance(out, list | tuple):
            out = out[-1]
        if not isinstance(out, torch.Tensor) or out.ndim not in (2, 4):
            raise ConfigError(
                "model.backbone: the backbone must return [B, D, h, w] or [B, D] features"
            )
        return out[:, :, None, None] if out.ndim == 2 else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x)

    def train(self, mode: bool = True) -> ExternalBackbone:
        super().train(mode)
        if not self.trainable:
            self.module.eval()
        return self


def build_backbone(
    spec: str,
    *,
    weights: str | None,
    in_channels: int,
    probe_size: int,
    trainable: bool,
) -> ExternalBackbone | None:
    """Build the backbone named by ``spec`` (``None`` for the built-in CNN).

    Parameters
    ----------
    spec
        ``"builtin"``, ``"timm:<model_name>"`` or ``"torchscript:<path>"``.
    weights
        Local weights file for a timm model (required: weights are never downloaded).
    in_channels
        Image channels ``C``.
    probe_size
        Side (px) of the zero image used once to measure the feature width ``D``.
    trainable
        Fine-tune the backbone (else frozen).
    """
    kind, arg = parse_backbone(spec)
    if kind == "builtin":
        return None
    module = _load_timm(arg, weights, in_channels) if kind == "timm" else _load_torchscript(arg)
    probe = torch.zeros(1, in_channels, probe_size, probe_size)
    return ExternalBackbone(module, trainable=trainable, probe=probe)


def _load_timm(name: str, weights: str | None, in_channels: int) -> nn.Module:
    try:
        timm = importlib.import_module("timm")
    except ImportError:
        raise ConfigError(
            f"model.backbone: 'timm:{name}' needs the optional package timm, which is not "
            "installed (pip install timm); or use 'builtin' or 'torchscript:<path>'"
        ) from None
    if weights is None:
        raise ConfigError(
            f"model.backbone_weights: 'timm:{name}' needs a local weights file "
            "(diffst never downloads weights)"
        )
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(f"{path}: model.backbone_weights file not found")
    try:
        module = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_channels)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(
            f"model.backbone: timm cannot build {name!r} as a feature extractor: {err}"
        ) from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    missing, _ = module.load_state_dict(state, strict=False)
    if missing:
        raise ConfigError(
            f"{path}: model.backbone_weights lacks {len(missing)} tensors of timm model {name}, "
            f"e.g. {missing[:3]}"
        )
    return module


def _load_torchscript(path_str: str) -> nn.Module:
    path = Path(path_str)
    if not path.is_file():
        raise ConfigError(f"{path}: model.backbone TorchScript file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as err:
        raise ConfigError(f"{path}: model.backbone is not a TorchScript file: {err}") from None
