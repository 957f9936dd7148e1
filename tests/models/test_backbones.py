"""External histology backbones: TorchScript files and timm (optional, local weights only)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from diffst.config import ConfigError
from diffst.models.backbones import build_backbone
from tests.models.conftest import IMAGE_CHANNELS, tiny_config, tiny_inputs, tiny_model


class _TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(IMAGE_CHANNELS, 5, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


@pytest.fixture
def scripted(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_cnn.pt"
    torch.jit.script(_TinyCNN()).save(str(path))
    return path


def test_torchscript_backbone_loads_and_is_frozen(scripted: Path) -> None:
    backbone = build_backbone(
        f"torchscript:{scripted}", weights=None, in_channels=3, probe_size=8, trainable=False
    )
    assert backbone is not None and backbone.out_channels == 5
    assert backbone(torch.rand(2, 3, 8, 8)).shape == (2, 5, 4, 4)
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.module.training


def test_model_with_torchscript_backbone(scripted: Path) -> None:
    cfg = tiny_config(backbone=f"torchscript:{scripted}", backbone_trainable=True)
    model = tiny_model(cfg)
    assert model.histology is not None
    assert model.histology.tissue.features is model.histology.cells.features  # shared backbone
    cond = model.encode_condition(**tiny_inputs(2))
    cond.features.square().mean().backward()
    grad = model.histology.tissue.features.module.conv.weight.grad
    assert grad is not None and grad.abs().sum() > 0


class _NormedCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(IMAGE_CHANNELS, 5, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


def test_gradient_checkpointing_leaves_an_external_backbone_alone(tmp_path: Path) -> None:
    """Recomputing a backbone in backward would update its BatchNorm statistics twice."""
    path = tmp_path / "normed.pt"
    torch.jit.script(_NormedCNN()).save(str(path))
    tracked = []
    for flag in (False, True):
        cfg = tiny_config(
            backbone=f"torchscript:{path}", backbone_trainable=True, gradient_checkpointing=flag
        )
        model = tiny_model(cfg).train()
        cond = model.encode_condition(**tiny_inputs(2))
        cond.features.square().mean().backward()
        tracked.append(int(model.histology.tissue.features.module.bn.num_batches_tracked))
    # once at the width probe, once for the tissue view, once for the cell tiles; not again
    assert tracked[1] == tracked[0] == 3


def test_torchscript_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        build_backbone(
            f"torchscript:{tmp_path / 'missing.pt'}",
            weights=None,
            in_channels=3,
            probe_size=8,
            trainable=False,
        )
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match=r"bad\.pt"):
        build_backbone(
            f"torchscript:{bad}", weights=None, in_channels=3, probe_size=8, trainable=False
        )


def test_torchscript_backbone_with_wrong_channels(scripted: Path) -> None:
    with pytest.raises(ConfigError, match="image_channels"):
        build_backbone(
            f"torchscript:{scripted}", weights=None, in_channels=2, probe_size=8, trainable=False
        )


def test_timm_absent_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm → ImportError
    with pytest.raises(ConfigError, match="needs the optional package timm"):
        tiny_model(tiny_config(backbone="timm:resnet18", backbone_weights="w.pth"))


def test_builtin_backbone_is_none() -> None:
    assert (
        build_backbone("builtin", weights=None, in_channels=3, probe_size=8, trainable=False)
        is None
    )


class _FakeFeatureNet(nn.Module):
    """Stands in for a timm ``features_only`` model: returns a list of feature maps."""

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_chans, 4, 3, padding=1)
        self.stage = nn.Conv2d(4, 6, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        first = self.stem(x)
        return [first, self.stage(first)]


def test_timm_path_builds_without_download_and_loads_local_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict] = []

    def create_model(name: str, **kwargs: object) -> nn.Module:
        calls.append({"name": name, **kwargs})
        return _FakeFeatureNet(int(kwargs["in_chans"]))  # type: ignore[call-overload]

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    source = _FakeFeatureNet(2)
    weights = tmp_path / "w.pth"
    torch.save({"state_dict": source.state_dict()}, weights)
    backbone = build_backbone(
        "timm:fake_net", weights=str(weights), in_channels=2, probe_size=8, trainable=False
    )
    assert calls == [
        {"name": "fake_net", "pretrained": False, "features_only": True, "in_chans": 2}
    ]
    assert backbone is not None and backbone.out_channels == 6
    torch.testing.assert_close(backbone.module.stage.weight, source.stage.weight)
    with pytest.raises(ConfigError, match="needs a local weights file"):
        build_backbone("timm:fake_net", weights=None, in_channels=2, probe_size=8, trainable=False)
    with pytest.raises(ConfigError, match="not found"):
        build_backbone(
            "timm:fake_net",
            weights=str(tmp_path / "x.pth"),
            in_channels=2,
            probe_size=8,
            trainable=False,
        )
    partial = tmp_path / "partial.pth"
    torch.save({"stem.weight": source.stem.weight}, partial)
    with pytest.raises(ConfigError, match="lacks 3 tensors"):
        build_backbone(
            "timm:fake_net", weights=str(partial), in_channels=2, probe_size=8, trainable=False
        )
