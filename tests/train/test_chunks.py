"""The UNet in chunks of the batch: the same loss and gradients as one pass, and its resolution."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch

from diffst.config import ConfigError
from diffst.diffusion import DiffusionConfig, NoiseSchedule, training_losses
from diffst.models import ModelConfig
from diffst.runs.checkpoint import LAST, load_checkpoint
from diffst.training.chunks import chunked_backward, resolve_unet_chunk
from diffst.training.loop import train
from tests.models.conftest import HR, N_GENES, tiny_config, tiny_inputs, tiny_model

from .conftest import tiny_config as tiny_run_config

BATCH = 4
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # (model changes, diffusion changes)
    "paper": ({}, {}),
    # corrective diffusion: the mean pass per chunk, HR image features and the residual target
    "mean_head": (
        {"mean_head": True, "hr_image_channels": 3, "hr_image_width": 8},
        {"target": "mean", "mean_weight": 0.5, "prediction": "v"},
    ),
    "residual": ({}, {"target": "residual", "learn_sigma": True}),
    "checkpointing_attention": (
        {"gradient_checkpointing": True, "attention_resolutions": (1, 2), "num_res_blocks": 2},
        {"t_max_share": 0.5},
    ),
    "no_histology": ({"use_histology": False}, {}),
}


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    mask = torch.ones(BATCH, 1, HR, HR)
    mask[0, :, :, -3:] = 0  # patches with different numbers of in-mask bins
    mask[2, :, :2] = 0
    mask[3] = 0  # a patch wholly outside tissue
    return {"x0": torch.rand(BATCH, N_GENES, HR, HR, generator=g) * 2 - 1, "mask": mask}


def _gradients(name: str, chunk: int | None, scale: float = 1.0):
    model_changes, diffusion_changes = VARIANTS[name]
    torch.manual_seed(0)
    model = tiny_model(tiny_config(**model_changes)).train()
    model.set_training_progress(0.3)  # top-k tiles of the curriculum
    diffusion = DiffusionConfig(**diffusion_changes)
    schedule = NoiseSchedule.from_config(diffusion)
    data = _batch()
    inputs = tiny_inputs(BATCH)
    gen = torch.Generator().manual_seed(7)
    if chunk is None:  # one pass over the batch, as training_losses is used without chunks
        cond = model.encode_condition(**inputs)
        terms = training_losses(model, schedule, data["x0"], cond, data["mask"], diffusion, gen)
        (terms.total * scale).backward()
    else:
        terms = chunked_backward(
            model, schedule, data["x0"], data["mask"], diffusion, chunk, generator=gen,
            scale=scale, **inputs,
        )  # fmt: skip
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    values = torch.stack([terms.total, terms.simple, terms.vb, terms.disentangle, terms.mean])
    return values.detach(), grads


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("chunk", [1, 3])
def test_chunks_give_the_batch_loss_and_gradients(name: str, chunk: int) -> None:
    values, grads = _gradients(name, None, scale=0.5)
    values_c, grads_c = _gradients(name, chunk, scale=0.5)
    torch.testing.assert_close(values_c, values, rtol=1e-5, atol=1e-7)
    assert values[1] > 0 and (values[4] > 0) == VARIANTS[name][0].get("mean_head", False)
    assert grads_c.keys() == grads.keys() and len(grads) > 10
    for key in grads:
        torch.testing.assert_close(grads_c[key], grads[key], rtol=1e-4, atol=1e-6, msg=key)


def test_chunked_backward_accumulates_like_backward() -> None:
    """Two calls add their gradients, as two backward calls do (train.grad_accum)."""
    _, once = _gradients("paper", 2, scale=1.0)
    torch.manual_seed(0)
    model = tiny_model(tiny_config()).train()
    model.set_training_progress(0.3)
    diffusion = DiffusionConfig()
    schedule = NoiseSchedule.from_config(diffusion)
    data = _batch()
    for _ in range(2):
        chunked_backward(
            model, schedule, data["x0"], data["mask"], diffusion, 2,
            generator=torch.Generator().manual_seed(7), scale=0.5, **tiny_inputs(BATCH),
        )  # fmt: skip
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, once[name], rtol=1e-5, atol=1e-7, msg=name)


def test_resolve_unet_chunk() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    paper = ModelConfig()  # 128 channels: 32 MiB per patch at HR 256, 2 MiB at HR 64
    assert resolve_unet_chunk(0, paper, 256, 4, cpu) == 1
    assert resolve_unet_chunk(0, paper, 64, 4, cpu) == 2
    assert resolve_unet_chunk(0, paper, 32, 4, cpu) == 4
    assert resolve_unet_chunk(0, paper, 16, 64, cpu) == 32
    assert resolve_unet_chunk(0, paper, 256, 4, cuda) == 4
    assert resolve_unet_chunk(0, paper, 256, 4, cpu, distributed=True) == 4
    assert resolve_unet_chunk(0, paper, 256, 4, cpu, compiled=True) == 4
    assert resolve_unet_chunk(2, paper, 16, 4, cuda) == 2
    assert resolve_unet_chunk(9, paper, 16, 4, cpu) == 4
    assert resolve_unet_chunk(4, paper, 16, 4, cpu, distributed=True) == 4
    with pytest.raises(ConfigError, match="DDP"):
        resolve_unet_chunk(1, paper, 16, 4, cpu, distributed=True)
    with pytest.raises(ConfigError, match=r"train\.compile"):
        resolve_unet_chunk(2, paper, 16, 4, cpu, compiled=True)
    with pytest.raises(ConfigError, match="≥ 0"):
        resolve_unet_chunk(-1, paper, 16, 4, cpu)
    with pytest.raises(ConfigError, match="unet_chunk"):
        tiny_run_config("train.unet_chunk=-2")


def test_training_in_chunks_gives_the_same_steps(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two optimiser steps (batch 2, grad_accum 2) with chunks of 1 against one pass: the same
    losses and gradient norms; weights within float noise that Adam's first steps amplify for
    gradients near 0 (a step is ±lr there whatever the gradient's size)."""
    weights, logs = {}, {}
    for chunk in (2, 1):
        out = tmp_path / f"chunk{chunk}"
        cfg = tiny_run_config(
            "train.max_steps=2", "train.val_every=0", "train.grad_accum=2", "train.log_every=1",
            f"train.unet_chunk={chunk}", "model.dropout=0.0",
        )  # fmt: skip
        train(store, out, cfg, progress=False)
        said = "UNet passes in chunks of 1 of the 2 patches" in capsys.readouterr().out
        assert said == (chunk == 1)
        weights[chunk] = load_checkpoint(out / "checkpoints" / LAST)["model"]
        with open(out / "log.csv", newline="") as fh:
            logs[chunk] = [
                [float(r[k]) for k in ("loss", "loss_simple", "loss_disentangle", "grad_norm")]
                for r in csv.DictReader(fh)
            ]
    assert len(logs[1]) == 2
    torch.testing.assert_close(torch.tensor(logs[1]), torch.tensor(logs[2]), rtol=1e-4, atol=0)
    moved = 0
    for key, value in weights[2].items():
        tol = 2.5 * cfg.train.lr
        torch.testing.assert_close(weights[1][key], value, rtol=0, atol=tol, msg=key)
        moved += int(value.is_floating_point() and value.numel() > 1)
    assert moved > 10


def test_chunks_under_bf16_autocast() -> None:
    """train.amp=bf16 runs the chunks inside autocast: the gradient stays that of one pass (to
    bf16 rounding: the sums run in another order)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values, grads = _gradients("paper", None)
        values_c, grads_c = _gradients("paper", 2)
    torch.testing.assert_close(values_c, values, rtol=2e-2, atol=1e-3)
    assert grads_c.keys() == grads.keys()
    flat = torch.cat([g.flatten() for g in grads.values()])
    flat_c = torch.cat([grads_c[k].flatten() for k in grads])
    cos = torch.nn.functional.cosine_similarity(flat, flat_c, dim=0)
    assert cos > 0.999, cos
    assert torch.linalg.vector_norm(flat_c - flat) < 0.02 * torch.linalg.vector_norm(flat)
