"""bf16 autocast where native (CUDA, CPUs with AVX512-BF16 / AMX), fp32 with a note elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffst import precision
from diffst.training import loop

from .conftest import tiny_config

pytestmark = pytest.mark.cpu_features


def test_native_bf16_answers_for_every_device() -> None:
    assert isinstance(precision.native_bf16("cpu"), bool)
    assert precision.native_bf16("meta") is False
    if not torch.cuda.is_available():
        assert precision.native_bf16("cuda") is False


def test_autocast_runs_matrix_products_in_bf16_only_when_enabled() -> None:
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with precision.autocast("cpu", True):
        assert (a @ b).dtype == torch.bfloat16
    with precision.autocast("cpu", False):
        assert (a @ b).dtype == torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_training_with_amp_uses_bf16_only_where_native(
    native: bool, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(loop, "native_bf16", lambda device: native)
    seen: list[torch.dtype] = []
    original = loop._LossModule.forward

    def spy(self: loop._LossModule, batch: dict, generator: torch.Generator) -> torch.Tensor:
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)  # type: ignore[arg-type]
        return original(self, batch, generator)

    monkeypatch.setattr(loop._LossModule, "forward", spy)
    cfg = tiny_config("train.max_steps=2", "train.val_every=0", "train.amp=bf16")
    result = loop.train(store, tmp_path / "run", cfg, progress=False)
    assert result.step == 2 and torch.isfinite(torch.tensor(result.loss))
    assert seen == ([torch.bfloat16] if native else [None]) * 2
    out = capsys.readouterr().out
    assert ("bf16 autocast on cpu" in out) == native
    assert ("has no native bf16" in out) == (not native)


@pytest.mark.slow
def test_compiled_bf16_training_runs_and_resumes(store: Path, tmp_path: Path) -> None:
    """``train.compile`` with bf16 autocast (a fast path on CPUs and GPUs); minutes on CPU."""
    cfg = tiny_config(
        "train.max_steps=2", "train.val_every=0", "train.amp=bf16", "train.compile=true"
    )
    first = loop.train(store, tmp_path / "run", cfg, progress=False)
    assert first.step == 2 and torch.isfinite(torch.tensor(first.loss))
    more = tiny_config(
        "train.max_steps=3", "train.val_every=0", "train.amp=bf16", "train.compile=true"
    )
    second = loop.train(store, tmp_path / "run", more, resume=True, progress=False)
    assert second.step == 3 and torch.isfinite(torch.tensor(second.loss))
