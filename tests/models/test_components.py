"""Building blocks, gene graph, fusion and histology encoder, checked against references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from diffst.models.blocks import (
    CrossAttention,
    ResBlock,
    grid_position_encoding,
    timestep_embedding,
)
from diffst.models.fusion import CrossModalModulation, MultiModalFusion, disentangle_loss
from diffst.models.gene_graph import GeneGraphConv, LREncoder
from diffst.models.histology import HistologyEncoder
from tests.models.conftest import IMAGE_CHANNELS, tiny_config, tiny_inputs


def test_timestep_embedding_values() -> None:
    emb = timestep_embedding(torch.tensor([0, 3]), 6)
    assert emb.shape == (2, 6)
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 1, 1, 0, 0, 0]))
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(3) / 3)
    torch.testing.assert_close(emb[1, :3], torch.cos(3 * freqs))
    torch.testing.assert_close(emb[1, 3:], torch.sin(3 * freqs))


def test_resblock_film_conditioning_changes_output() -> None:
    block = ResBlock(4, 6, emb_dim=5, groups=2)
    x = torch.randn(2, 4, 5, 7)
    out_a = block(x, torch.zeros(2, 5))
    out_b = block(x, torch.ones(2, 5))
    assert out_a.shape == (2, 6, 5, 7)
    assert not torch.allclose(out_a, out_b)
    with pytest.raises(ValueError, match="emb"):
        block(x)


@pytest.mark.parametrize(("fine", "coarse", "dim"), [(4, 2, 16), (64, 16, 64), (16, 4, 8)])
def test_position_encoding_is_consistent_across_grids(fine: int, coarse: int, dim: int) -> None:
    fine_code = grid_position_encoding(fine, fine, dim)
    coarse_code = grid_position_encoding(coarse, coarse, dim)
    assert fine_code.shape == (fine * fine, dim) and coarse_code.shape == (coarse**2, dim)
    # The code of a coarse cell is closest to the codes of the fine cells it covers.
    nearest = torch.cdist(fine_code, coarse_code).argmin(dim=1).reshape(fine, fine)
    cover = torch.arange(fine) * coarse // fine
    assert torch.equal(nearest, cover[:, None] * coarse + cover[None, :])


def test_cross_attention_matches_reference() -> None:
    attn = CrossAttention(4, 6, n_heads=1)
    q, ctx = torch.randn(2, 5, 4), torch.randn(2, 3, 6)
    qq = attn.to_q(attn.norm_q(q))
    kk, vv = attn.to_k(attn.norm_k(ctx)), attn.to_v(attn.norm_k(ctx))
    weights = torch.softmax(qq @ kk.transpose(1, 2) / 2.0, dim=-1)
    torch.testing.assert_close(attn(q, ctx), attn.proj(weights @ vv))


def test_gene_graph_conv_is_residual_mix() -> None:
    adj = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])
    conv = GeneGraphConv(adj, residual=0.02, kernel=1)
    x = torch.randn(2, 3, 4, 5)
    w = conv.spatial_mix.weight.reshape(3, 1, 1, 1)
    b = conv.spatial_mix.bias.reshape(1, 3, 1, 1)
    graph = F.silu(torch.einsum("gk,bkhw->bghw", adj, x) * w.reshape(1, 3, 1, 1) + b)
    torch.testing.assert_close(conv(x), 0.98 * x + 0.02 * graph)
    assert "adjacency" in dict(conv.named_buffers())


@pytest.mark.parametrize(("lr", "grid"), [(3, 4), (5, 4), (13, 32), (26, 64)])
def test_lr_encoder_any_lr_size(lr: int, grid: int) -> None:
    enc = LREncoder(4, 6, torch.eye(4), hidden=8, residual=0.02, kernel=3, groups=4)
    assert enc(torch.randn(2, 4, lr, lr), (grid, grid)).shape == (2, 6, grid, grid)
    assert LREncoder(4, 6, None, hidden=8, residual=0.02, kernel=3, groups=4).graph is None


def _naive_modulation(mod: CrossModalModulation, target: torch.Tensor, source: torch.Tensor):
    _, c, h, w = target.shape
    r = mod.window // 2
    src = mod.norm_source(source)
    q, k, v = mod.to_q(mod.norm_target(target)), mod.to_k(src), mod.to_v(src)
    agg = torch.zeros_like(target)
    for i in range(h):
        for j in range(w):
            pos = [
                (a, e)
                for a in range(i - r, i + r + 1)
                for e in range(j - r, j + r + 1)
                if 0 <= a < h and 0 <= e < w
            ]
            keys = torch.stack([k[:, :, a, e] for a, e in pos], dim=-1)
            vals = torch.stack([v[:, :, a, e] for a, e in pos], dim=-1)
            wts = torch.softmax((q[:, :, i, j, None] * keys).sum(1) / math.sqrt(c), dim=-1)
            agg[:, :, i, j] = (wts[:, None] * vals).sum(-1)
    scale, shift = mod.to_scale_shift(agg).chunk(2, dim=1)
    return target * (1 + scale) + shift


def test_modulation_matches_naive_windows() -> None:
    mod = CrossModalModulation(4, window=3, groups=2)
    target, source = torch.randn(2, 4, 4, 5), torch.randn(2, 4, 4, 5)
    torch.testing.assert_close(mod(target, source), _naive_modulation(mod, target, source))


def test_disentangle_loss_value() -> None:
    ci, ce = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)
    di, de = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 4.0)
    assert disentangle_loss(ci, ce, di, de, eps=0.0).item() == pytest.approx(4.0 / 16.0)
    assert disentangle_loss(ci, ci, di, di, eps=1e-6).item() == 0.0


@pytest.mark.parametrize(
    ("disentangle", "modulation", "channels"),
    [(True, True, 18), (True, False, 18), (False, True, 12), (False, False, 12)],
)
def test_fusion_shapes(disentangle: bool, modulation: bool, channels: int) -> None:
    fusion = MultiModalFusion(
        6, use_disentangle=disentangle, use_modulation=modulation, window=3, eps=1e-6, groups=2
    )
    out = fusion(torch.randn(2, 6, 4, 4), torch.randn(2, 6, 4, 4))
    assert fusion.out_channels == channels and out.features.shape == (2, channels, 4, 4)
    assert (out.disentangle_loss.item() > 0) == disentangle
    assert (fusion.modulate_img is not None) == modulation


def _tiles_seen(enc: HistologyEncoder, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    assert enc.cells is not None
    handle = enc.cells.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    enc(inputs["tissue"], inputs["cells"], inputs["cell_score"], (2, 2))
    handle.remove()
    return seen[0]


def test_curriculum_changes_number_of_tiles() -> None:
    cfg = tiny_config(curriculum_boundaries=(0.3, 0.6))
    enc = HistologyEncoder(cfg, IMAGE_CHANNELS, 8, grid=2).train()
    inputs = tiny_inputs(batch=2, cfg=cfg)
    counts = []
    for progress in (0.0, 0.4, 0.9):
        enc.set_training_progress(progress)
        counts.append(_tiles_seen(enc, inputs).shape[0])
    assert counts == [2 * 4, 2 * 8, 2 * 16]  # 25 %, 50 %, 100 % of 16 tiles, batch 2
    enc.set_training_progress(0.0)
    enc.eval()
    assert _tiles_seen(enc, inputs).shape[0] == 2 * 16
    with pytest.raises(ValueError, match="progress"):
        enc.set_training_progress(1.5)


def test_curriculum_keeps_highest_entropy_tiles() -> None:
    cfg = tiny_config()
    enc = HistologyEncoder(cfg, IMAGE_CHANNELS, 8, grid=2).train()
    inputs = tiny_inputs(batch=2, cfg=cfg)
    tiles = _tiles_seen(enc, inputs).reshape(2, 4, IMAGE_CHANNELS, 4, 4)
    for b in range(2):
        top = inputs["cell_score"][b].topk(4).indices
        kept = {tuple(t.flatten().tolist()) for t in tiles[b]}
        assert kept == {tuple(inputs["cells"][b, i].flatten().tolist()) for i in top}
    with pytest.raises(ValueError, match="cell_score"):
        enc(inputs["tissue"], inputs["cells"], None, (2, 2))


def test_cross_attention_residual_weight() -> None:
    cfg = tiny_config(cross_attention_residual=0.0)
    enc = HistologyEncoder(cfg, IMAGE_CHANNELS, 8, grid=2).eval()
    inputs = tiny_inputs(cfg=cfg)
    out = enc(inputs["tissue"], inputs["cells"], inputs["cell_score"], (2, 2))
    torch.testing.assert_close(out, enc.tissue(inputs["tissue"], (2, 2)))
    enc.cfg = tiny_config(cross_attention_residual=0.1)
    out = enc(inputs["tissue"], inputs["cells"], inputs["cell_score"], (2, 2))
    assert not torch.allclose(out, enc.tissue(inputs["tissue"], (2, 2)))


def test_learned_graph_gate_starts_at_half_and_is_trained() -> None:
    from diffst.models.gene_graph import GeneGraphConv

    adj = torch.full((3, 3), 1 / 3)
    conv = GeneGraphConv(adj, residual=0.02, kernel=3, learned_gate=True)
    torch.testing.assert_close(conv.weight(), torch.full((3,), 0.5))
    x = torch.randn(2, 3, 4, 4)
    conv(x).square().mean().backward()
    assert conv.gate is not None and conv.gate.grad is not None and conv.gate.grad.abs().sum() > 0
    fixed = GeneGraphConv(adj, residual=0.02, kernel=3)
    assert fixed.gate is None and torch.allclose(fixed.weight(), torch.full((3,), 0.02))


def test_cosine_disentangle_loss_cannot_be_lowered_by_scaling() -> None:
    from diffst.models.fusion import cosine_disentangle_loss, disentangle_loss

    g = torch.Generator().manual_seed(0)
    c1, c2, d1, d2 = (torch.randn(2, 8, 3, 3, generator=g) for _ in range(4))
    base = cosine_disentangle_loss(c1, c2, d1, d2)
    torch.testing.assert_close(cosine_disentangle_loss(c1, c2, 10 * d1, 10 * d2), base)
    # the paper's ratio falls towards 0 just by inflating the distinct parts
    assert disentangle_loss(c1, c2, 10 * d1, 10 * d2, 1e-6) < 0.05 * disentangle_loss(
        c1, c2, d1, d2, 1e-6
    )
    assert cosine_disentangle_loss(c1, c1, d1, -d1).item() == pytest.approx(0.0, abs=1e-6)
    assert 0.0 <= base.item() <= 3.0
