"""The upsampled LR map concatenated to x_t at the denoiser input."""

from __future__ import annotations

import torch

from tests.models.conftest import HR, LR, N_GENES, tiny_config, tiny_inputs, tiny_model


def test_lr_is_copied_onto_its_exact_hr_footprint() -> None:
    model = tiny_model()  # HR 8, LR 3 → factor ceil(8 / 3) = 3, partial last cell
    inputs = tiny_inputs()
    cond = model.encode_condition(**inputs)
    assert cond.lr_up is not None and model.lr_factor == 3
    up = cond.lr_up
    for a in range(LR):
        for b in range(LR):
            block = up[:, :, 3 * a : 3 * a + 3, 3 * b : 3 * b + 3]
            assert torch.equal(block, inputs["lr"][:, :, a : a + 1, b : b + 1].expand_as(block))
    assert model.denoiser.input_conv.in_channels == 2 * N_GENES


def test_prediction_depends_on_the_lr_input_through_the_concatenation() -> None:
    model = tiny_model().eval()
    inputs = tiny_inputs()
    cond = model.encode_condition(**inputs)
    x = torch.randn(2, N_GENES, HR, HR)
    t = torch.tensor([10, 500])
    base = model(x, t, cond).prediction
    changed = cond.select(slice(None))
    assert changed.lr_up is not None
    changed.lr_up = changed.lr_up + 1.0
    assert not torch.allclose(model(x, t, changed).prediction, base)


def test_repeat_and_select_carry_the_upsampled_lr() -> None:
    model = tiny_model().eval()
    cond = model.encode_condition(**tiny_inputs())
    assert cond.lr_up is not None
    rep = cond.repeat(3)
    assert rep.lr_up is not None and rep.lr_up.shape[0] == 6
    assert torch.equal(rep.lr_up[3], cond.lr_up[1])
    assert cond.detach().lr_up is not None


def test_switches_remove_the_concatenation() -> None:
    for cfg in (tiny_config(lr_input_concat=False), tiny_config(use_lr=False)):
        model = tiny_model(cfg)
        assert model.denoiser.input_conv.in_channels == N_GENES
        cond = model.encode_condition(**tiny_inputs(cfg=cfg))
        assert cond.lr_up is None


def test_bicubic_lr_map_passes_through_cell_centres_and_is_smooth() -> None:
    cfg = tiny_config(lr_upsample="bicubic")
    model = tiny_model(cfg).eval()  # factor 3: bin 3a + 1 is the centre of LR cell a
    inputs = tiny_inputs(cfg=cfg)
    lr = inputs["lr"].clamp(-0.9, 0.9)
    inputs["lr"] = lr
    up = model.encode_condition(**inputs).lr_up
    assert up is not None and up.shape[-2:] == (3 * LR, 3 * LR)
    centres = up[:, :, 1::3, 1::3]
    torch.testing.assert_close(centres, lr, rtol=0, atol=1e-5)
    # between two cells the map takes intermediate values, unlike the nearest copy
    nearest = tiny_model().encode_condition(**inputs).lr_up
    assert nearest is not None and not torch.allclose(up, nearest)
    # a constant map stays constant; values below −1 (zero counts) are clamped
    inputs["lr"] = torch.full_like(lr, 0.25)
    flat = model.encode_condition(**inputs).lr_up
    assert flat is not None
    torch.testing.assert_close(flat, torch.full_like(flat, 0.25))
    inputs["lr"] = torch.full_like(lr, -1.0)
    inputs["lr"][:, :, 1, 1] = 1.0  # the cubic kernel's negative lobes undershoot next to a peak
    low = model.encode_condition(**inputs).lr_up
    assert low is not None and low.min().item() == -1.0


def test_unknown_lr_upsample_is_rejected() -> None:
    import pytest

    from diffst.config import ConfigError

    with pytest.raises(ConfigError, match="lr_upsample"):
        tiny_config(lr_upsample="linear")
