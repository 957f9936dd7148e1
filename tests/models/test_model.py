"""DiffSTModel: shapes and gradients under every ablation, overfitting, sizes, errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from diffst.config import ConfigError
from diffst.models import Condition, DiffSTModel, count_parameters
from tests.models.conftest import (
    ABLATIONS,
    HR,
    IMAGE_CHANNELS,
    LR,
    N_GENES,
    tiny_config,
    tiny_inputs,
    tiny_model,
)


def _run(model: DiffSTModel, batch: int = 2, hr: int = HR, lr: int = LR):
    cond = model.encode_condition(**tiny_inputs(batch, lr=lr, cfg=model.cfg))
    x_t = torch.randn(batch, N_GENES, hr, hr)
    return cond, model(x_t, torch.randint(0, 1000, (batch,)), cond)


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_shapes_under_every_ablation(name: str) -> None:
    model = tiny_model(tiny_config(**ABLATIONS[name]))
    cond, out = _run(model)
    assert cond.features.shape[:1] == (2,) and cond.features.shape[-2:] == (4, 4)
    assert cond.tokens.shape[:2] == (2, 4) and cond.tokens.shape[2] == cond.features.shape[1]
    assert out.prediction.shape == (2, N_GENES, HR, HR)
    assert out.variance is not None and out.variance.shape == (2, N_GENES, HR, HR)
    assert cond.disentangle_loss.shape == ()
    both = model.cfg.use_lr and model.cfg.use_histology
    if both and model.cfg.use_disentangle:
        assert cond.disentangle_loss.item() > 0
    else:
        assert cond.disentangle_loss.item() == 0.0


EXPECTED_PARTS: dict[str, dict[str, Any]] = {
    "no_graph": {"lr_encoder.graph": None},
    "no_cross_attention": {"histology.cells": None, "histology.attention": None},
    "no_disentangle": {"fusion.common": None, "fusion.distinct": None},
    "no_modulation": {"fusion.modulate_img": None, "fusion.modulate_expr": None},
    "no_histology": {"histology": None, "fusion": None},
    "no_lr": {"lr_encoder": None, "fusion": None},
}


@pytest.mark.parametrize("name", list(EXPECTED_PARTS))
def test_ablation_removes_component(name: str) -> None:
    model = tiny_model(tiny_config(**ABLATIONS[name]))
    full = tiny_model()
    for path, value in EXPECTED_PARTS[name].items():
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part)
        assert obj is value, path
    assert count_parameters(model) < count_parameters(full)


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_every_parameter_gets_a_gradient(name: str) -> None:
    model = tiny_model(tiny_config(**ABLATIONS[name])).train()
    cond, out = _run(model)
    assert out.variance is not None
    loss = out.prediction.square().mean() + out.variance.square().mean() + cond.disentangle_loss
    loss.backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert missing == []


def test_tiny_model_overfits_one_batch() -> None:
    model = tiny_model(tiny_config(learn_sigma=False)).train()
    model.set_training_progress(1.0)
    inputs = tiny_inputs(2)
    x_t = torch.randn(2, N_GENES, HR, HR)
    t = torch.tensor([10, 700])
    target = torch.randn(2, N_GENES, HR, HR)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(40):
        cond = model.encode_condition(**inputs)
        loss = F.mse_loss(model(x_t, t, cond).prediction, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


@pytest.mark.parametrize(
    ("hr", "lr", "mult"), [(8, 2, (1, 2)), (16, 5, (1, 2)), (24, 7, (1, 1, 2))]
)
def test_other_hr_and_lr_sizes(hr: int, lr: int, mult: tuple[int, ...]) -> None:
    model = tiny_model(tiny_config(channel_mult=mult), hr=hr, lr=lr)
    cond, out = _run(model, hr=hr, lr=lr)
    assert cond.features.shape[-1] == hr // 2 ** (len(mult) - 1)
    assert out.prediction.shape == (2, N_GENES, hr, hr)
    # The LR size is not wired into any layer: another LR grid works with the same weights.
    cond2 = model.encode_condition(**tiny_inputs(2, lr=lr + 3))
    assert cond2.features.shape == cond.features.shape


def test_size_and_input_errors() -> None:
    with pytest.raises(ConfigError, match="hr_size 9"):
        tiny_model(hr=9)
    with pytest.raises(ConfigError, match="adjacency"):
        DiffSTModel(tiny_config(), N_GENES, IMAGE_CHANNELS, LR, HR, None)
    model = tiny_model()
    inputs = tiny_inputs(2)
    with pytest.raises(ValueError, match="lr"):
        model.encode_condition(None, inputs["tissue"], inputs["cells"], inputs["cell_score"])
    with pytest.raises(ValueError, match="tissue"):
        model.encode_condition(inputs["lr"], inputs["tissue"][:, :2])
    cond = model.encode_condition(**inputs)
    with pytest.raises(ValueError, match="batch"):
        model(torch.randn(3, N_GENES, HR, HR), torch.zeros(3, dtype=torch.long), cond)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(2, N_GENES, 7, 7), torch.zeros(2, dtype=torch.long), cond)


def test_branch_inputs_may_be_absent_when_branch_is_off() -> None:
    inputs = tiny_inputs(2)
    model = tiny_model(tiny_config(use_histology=False))
    assert model.encode_condition(inputs["lr"]).features.shape[0] == 2
    model = DiffSTModel(tiny_config(use_lr=False), N_GENES, IMAGE_CHANNELS, LR, HR, None)
    cond = model.encode_condition(None, inputs["tissue"], inputs["cells"], inputs["cell_score"])
    assert cond.features.shape[0] == 2


def test_condition_repeat_and_select_reuse() -> None:
    model = tiny_model().eval()
    with torch.no_grad():
        cond = model.encode_condition(**tiny_inputs(2))
        rep = cond.repeat(3)
        assert isinstance(rep, Condition) and rep.batch_size == 6
        torch.testing.assert_close(rep.features[3], cond.features[1])
        torch.testing.assert_close(
            rep.select(slice(3, 6)).tokens, cond.tokens[1:2].expand(3, -1, -1)
        )
        x_t = torch.randn(2, N_GENES, HR, HR)
        t = torch.tensor([5, 5])
        once = model(x_t, t, cond).prediction
        again = model(x_t.repeat_interleave(3, 0), t.repeat_interleave(3), rep).prediction
        torch.testing.assert_close(again[::3], once, atol=1e-5, rtol=1e-4)
    assert not cond.detach().features.requires_grad


def test_learn_sigma_off_gives_no_variance() -> None:
    _, out = _run(tiny_model(tiny_config(learn_sigma=False)))
    assert out.variance is None and out.prediction.shape == (2, N_GENES, HR, HR)


def test_channels_last_and_bfloat16_autocast() -> None:
    model = tiny_model().eval()
    inputs = tiny_inputs(2)
    x_t = torch.randn(2, N_GENES, HR, HR)
    t = torch.tensor([1, 999])
    with torch.no_grad():
        ref = model(x_t, t, model.encode_condition(**inputs)).prediction
        model = model.to(memory_format=torch.channels_last)
        cl_inputs = {
            k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v
            for k, v in inputs.items()
        }
        cl = model(
            x_t.contiguous(memory_format=torch.channels_last),
            t,
            model.encode_condition(**cl_inputs),
        ).prediction
        torch.testing.assert_close(cl, ref, atol=1e-4, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x_t, t, model.encode_condition(**inputs)).prediction
    assert torch.isfinite(low).all()
    assert (low.float() - ref).abs().mean() < 0.1 * ref.abs().mean() + 0.05


def test_adjacency_is_saved_with_the_weights() -> None:
    model = tiny_model()
    state = model.state_dict()
    assert state["lr_encoder.graph.adjacency"].shape == (N_GENES, N_GENES)
    other = DiffSTModel(tiny_config(), N_GENES, IMAGE_CHANNELS, LR, HR, torch.eye(N_GENES))
    other.load_state_dict(state)
    torch.testing.assert_close(
        other.lr_encoder.graph.adjacency, state["lr_encoder.graph.adjacency"]
    )


CHECKPOINTED = {
    "paper": {},
    # corrective diffusion: the UNet runs twice (mean pass, denoiser) and reads HR image features
    "mean_head": {"mean_head": True, "hr_image_channels": 3, "hr_image_width": 8},
    # attention inside the recomputed segments, two blocks per level, dropout (RNG restored)
    "attention_dropout": {"attention_resolutions": (1, 2), "num_res_blocks": 2, "dropout": 0.2},
}


def _step_with_saved_bytes(cfg_changes: dict[str, Any], flag: bool, *, train: bool = True):
    """Outputs, parameter gradients and bytes saved for backward of one loss on a tiny model."""
    torch.manual_seed(0)
    model = tiny_model(tiny_config(gradient_checkpointing=flag, **cfg_changes)).train(train)
    model.set_training_progress(0.0)  # a curriculum share below 1: the top-k tiles are picked
    saved = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    torch.manual_seed(1)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        cond, out = _run(model)
    loss = out.prediction.square().mean() + out.variance.square().mean() + cond.disentangle_loss
    if cond.mean is not None:
        loss = loss + cond.mean.square().mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return (out.prediction.detach(), out.variance.detach()), grads, sum(saved.values())


@pytest.mark.parametrize("name", list(CHECKPOINTED))
def test_gradient_checkpointing_gives_the_same_gradients(name: str) -> None:
    outs, grads, saved = _step_with_saved_bytes(CHECKPOINTED[name], False)
    outs_ck, grads_ck, saved_ck = _step_with_saved_bytes(CHECKPOINTED[name], True)
    torch.testing.assert_close(outs_ck, outs, rtol=0, atol=0)
    assert grads_ck.keys() == grads.keys()
    assert len(grads) == sum(1 for _ in tiny_model(tiny_config(**CHECKPOINTED[name])).parameters())
    for key in grads:
        torch.testing.assert_close(grads_ck[key], grads[key], rtol=1e-5, atol=1e-7, msg=key)
    # the encoders, the fusion and the UNet keep far less for backward (only segment inputs)
    assert saved_ck < 0.5 * saved, (saved_ck, saved)


def test_flop_counter_runs_the_mean_pass() -> None:
    """benchmarks/bench_train.py counts FLOPs of a no_grad forward; the mean pass must not hand
    its blocks a parameter view that claims requires_grad without a grad_fn."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = tiny_config(mean_head=True)
    model = tiny_model(cfg).train()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        cond = model.encode_condition(**tiny_inputs(1, cfg=cfg))
        model(torch.randn(1, N_GENES, HR, HR), torch.tensor([3]), cond)
    assert cond.mean is not None and counter.get_total_flops() > 0


def test_gradient_checkpointing_is_off_outside_training() -> None:
    _, _, saved_eval = _step_with_saved_bytes({}, False, train=False)
    _, _, saved_eval_ck = _step_with_saved_bytes({}, True, train=False)
    assert saved_eval_ck == saved_eval


def test_tile_mosaic_reassembles_the_image_the_tiles_were_cut_from() -> None:
    from diffst.models.histology import tile_mosaic

    n, t, c = 3, 4, 2
    image = torch.arange(c * n * t * n * t, dtype=torch.float32).reshape(c, n * t, n * t)
    # the cut of diffst.sections.views: (c, n, t, n, t) → (n, n, c, t, t), row-major tiles
    tiles = image.reshape(c, n, t, n, t).permute(1, 3, 0, 2, 4).reshape(n * n, c, t, t)
    torch.testing.assert_close(tile_mosaic(tiles[None])[0], image)
    with pytest.raises(ValueError, match="square grid"):
        tile_mosaic(torch.zeros(1, 5, c, t, t))


def test_hr_image_features_enter_the_unet_at_every_hr_bin() -> None:
    cfg = tiny_config(hr_image_channels=3, hr_image_width=8)
    model = tiny_model(cfg).train()
    inputs = tiny_inputs(2, cfg=cfg)
    cond = model.encode_condition(**inputs)
    assert cond.hr_image is not None and cond.hr_image.shape == (2, 3, HR, HR)
    assert model.denoiser.input_conv.in_channels == 2 * N_GENES + 3
    out = model(torch.randn(2, N_GENES, HR, HR), torch.randint(0, 1000, (2,)), cond)
    (out.prediction.square().mean() + cond.disentangle_loss).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.hr_image.parameters())
    # the features follow the image: other pixels, other features
    other = dict(inputs, cells=inputs["cells"].flip(-1))
    again = model.encode_condition(**other)
    assert not torch.allclose(again.hr_image, cond.hr_image)
    rep = cond.repeat(3)
    assert rep.hr_image is not None and rep.hr_image.shape[0] == 6
    torch.testing.assert_close(rep.select([3]).hr_image, cond.hr_image[1:2])
    off = tiny_model(tiny_config(hr_image_channels=3, use_histology=False))
    assert off.hr_image is None  # no image branch, no HR image features


def test_lr_mask_input_tells_unmeasured_cells_from_zero_expression() -> None:
    """With ``model.lr_mask_input`` the model reads which LR cells were measured: the same LR
    values with a cell marked unmeasured give another condition; without it they cannot."""
    cfg = tiny_config(lr_mask_input=True)
    model = tiny_model(cfg).eval()
    inputs = tiny_inputs(1, cfg=cfg)
    mask = torch.ones(1, 1, LR, LR)
    hole = mask.clone()
    hole[0, 0, 0, 0] = 0
    a = model.encode_condition(**inputs, lr_mask=mask)
    b = model.encode_condition(**inputs, lr_mask=hole)
    assert a.lr_mask_up is not None and a.lr_mask_up.shape[:2] == (1, 1)
    assert a.lr_mask_up.shape[-1] >= HR  # f × LR cells, cropped to x_t in forward
    assert not torch.allclose(a.features, b.features)
    assert model.denoiser.input_conv.in_channels == 2 * N_GENES + 1
    x_t = torch.randn(1, N_GENES, HR, HR)
    t = torch.tensor([500])
    assert not torch.allclose(model(x_t, t, a).prediction, model(x_t, t, b).prediction)
    default = model.encode_condition(**inputs)  # no mask given: every cell measured
    torch.testing.assert_close(default.features, a.features)
    plain = tiny_model().eval()
    torch.testing.assert_close(
        plain.encode_condition(**inputs, lr_mask=mask).features,
        plain.encode_condition(**inputs, lr_mask=hole).features,
    )


def test_mean_head_regresses_from_the_condition_alone_and_feeds_the_denoiser() -> None:
    """``model.mean_head``: ``encode_condition`` also returns μ ``[B, G, H, W]`` (the UNet in its
    mean mode on x = 0), with a gradient path to every encoder; the denoiser reads μ as G more
    input channels but cannot move it (μ is cut from the denoising pass's graph)."""
    cfg = tiny_config(mean_head=True)
    model = tiny_model(cfg).train()
    model.set_training_progress(1.0)
    inputs = tiny_inputs(2, cfg=cfg)
    cond = model.encode_condition(**inputs)
    assert cond.mean is not None and cond.mean.shape == (2, N_GENES, HR, HR)
    assert model.denoiser.input_conv.in_channels == 3 * N_GENES
    # the mean depends on the condition, not on any x_t: same inputs, same μ
    again = model.encode_condition(**inputs)
    torch.testing.assert_close(again.mean, cond.mean)
    other = model.encode_condition(**dict(inputs, lr=inputs["lr"].flip(-1)))
    assert not torch.allclose(other.mean, cond.mean)
    # the mean loss reaches the mode embedding and the encoders
    cond.mean.square().mean().backward()
    assert model.denoiser.mean_embed is not None and model.denoiser.mean_embed.grad is not None
    assert model.denoiser.mean_embed.grad.abs().sum() > 0
    assert model.lr_encoder is not None
    assert all(p.grad is not None for p in model.lr_encoder.parameters())
    # the denoising pass reads μ but sends no gradient into it
    model.zero_grad()
    cond = model.encode_condition(**inputs)
    mean = cond.mean
    assert mean is not None
    mean.retain_grad()
    x_t = torch.randn(2, N_GENES, HR, HR)
    out = model(x_t, torch.randint(0, 1000, (2,)), cond)
    out.prediction.square().mean().backward()
    assert mean.grad is None or (mean.grad == 0).all()
    shifted = dataclasses.replace(cond, mean=cond.mean.detach() + 1.0)
    t = torch.tensor([10, 900])
    assert not torch.allclose(model(x_t, t, shifted).prediction, model(x_t, t, cond).prediction)
    # repeat / select / detach carry μ
    rep = cond.repeat(2)
    assert rep.mean is not None and rep.mean.shape[0] == 4
    torch.testing.assert_close(rep.select([2]).mean, cond.mean[1:2])
    assert not cond.detach().mean.requires_grad
    with pytest.raises(ValueError, match="mean_head"):
        tiny_model().denoiser(torch.zeros(1, 2 * N_GENES, HR, HR), None, cond.features[:1],
                              cond.tokens[:1], mean_mode=True)  # fmt: skip
    assert tiny_model().encode_condition(**tiny_inputs(1)).mean is None


@pytest.mark.parametrize("changes", [{}, {"mean_head": True, "learn_sigma": False}])
def test_inference_on_cpu_runs_the_unet_in_chunks_with_the_same_values(
    changes: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffst.models import model as model_module

    model = tiny_model(tiny_config(**changes)).eval()
    inputs = tiny_inputs(5, cfg=model.cfg)
    x_t, t = torch.randn(5, N_GENES, HR, HR), torch.randint(0, 1000, (5,))
    with torch.no_grad():  # 8 channels × 8 × 8 bins = 2 KiB per patch: one pass
        cond = model.encode_condition(**inputs)
        whole = model(x_t, t, cond)
    calls = []
    hook = model.denoiser.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    monkeypatch.setattr(model_module, "CPU_CHUNK_BYTES", 2 * 4 * 8 * HR * HR)  # 2 patches
    with torch.no_grad():
        cond_c = model.encode_condition(**inputs)  # the mean pass in chunks too
        chunked = model(x_t, t, cond_c)
    hook.remove()
    assert calls == [2, 2, 1] * (2 if model.cfg.mean_head else 1)
    torch.testing.assert_close(chunked.prediction, whole.prediction, rtol=1e-5, atol=1e-6)
    if whole.variance is None:
        assert chunked.variance is None
    else:
        torch.testing.assert_close(chunked.variance, whole.variance, rtol=1e-5, atol=1e-6)
    with torch.enable_grad():  # training keeps one pass (train.unet_chunk decides there)
        calls.clear()
        hook = model.denoiser.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
        model(x_t, t, cond_c.detach())
        hook.remove()
    assert calls == [5]
