"""Adjacency definitions and ModelConfig validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffst.config import ConfigError, from_dict, to_dict
from diffst.models import ModelConfig, coexpression_adjacency
from diffst.models.config import parse_backbone


def test_intensity_adjacency_hand_computed() -> None:
    # s = (1, 2, 4): raw A = [[1, 2, 4], [2, 1, 2], [4, 2, 1]], row sums 7, 5, 7.
    adj = coexpression_adjacency(totals=[1.0, 2.0, 4.0], kind="intensity")
    expected = torch.tensor([[1, 2, 4], [2, 1, 2], [4, 2, 1]], dtype=torch.float32)
    expected /= torch.tensor([[7.0], [5.0], [7.0]])
    assert adj.dtype == torch.float32
    torch.testing.assert_close(adj, expected)
    torch.testing.assert_close(adj.sum(1), torch.ones(3))


def test_intensity_guards_zero_totals() -> None:
    adj = coexpression_adjacency(totals=np.array([0.0, 3.0, 6.0]))
    assert torch.isfinite(adj).all()
    torch.testing.assert_close(adj[0], torch.tensor([1.0, 0.0, 0.0]))
    assert adj[1, 0] == 0 and adj[2, 0] == 0
    torch.testing.assert_close(adj[1], torch.tensor([0.0, 1.0, 2.0]) / 3.0)
    torch.testing.assert_close(adj.sum(1), torch.ones(3))


def test_pearson_abs_and_positive() -> None:
    r = np.array([[1.0, -0.5, 0.2], [-0.5, 1.0, np.nan], [0.2, np.nan, 1.0]])
    adj = coexpression_adjacency(pearson=r, kind="pearson")
    torch.testing.assert_close(adj[0], torch.tensor([1.0, 0.5, 0.2]) / 1.7)
    torch.testing.assert_close(adj[1], torch.tensor([0.5, 1.0, 0.0]) / 1.5)
    pos = coexpression_adjacency(pearson=torch.tensor(r), kind="pearson_positive")
    torch.testing.assert_close(pos[0], torch.tensor([1.0, 0.0, 0.2]) / 1.2)
    torch.testing.assert_close(pos.sum(1), torch.ones(3))
    torch.testing.assert_close(torch.diagonal(pos), torch.tensor([1 / 1.2, 1.0, 1 / 1.2]))


def test_adjacency_errors() -> None:
    with pytest.raises(ValueError, match="totals"):
        coexpression_adjacency(pearson=np.eye(2), kind="intensity")
    with pytest.raises(ValueError, match="square"):
        coexpression_adjacency(pearson=np.ones((2, 3)), kind="pearson")
    with pytest.raises(ValueError, match="non-negative"):
        coexpression_adjacency(totals=[1.0, -1.0])
    with pytest.raises(ConfigError, match="adjacency_kind"):
        coexpression_adjacency(totals=[1.0], kind="cosine")


def test_defaults_are_paper_values() -> None:
    cfg = ModelConfig()
    assert (cfg.base_channels, cfg.channel_mult, cfg.num_res_blocks) == (128, (1, 1, 1), 1)
    assert cfg.attention_resolutions == () and cfg.learn_sigma
    assert cfg.graph_residual == 0.02 and cfg.cross_attention_residual == 0.1
    assert cfg.curriculum_shares == (0.25, 0.5, 1.0)
    assert cfg.backbone == "builtin" and cfg.downsampling == 4
    assert not hasattr(cfg, "image_channels")


def test_config_round_trips_through_dict() -> None:
    cfg = ModelConfig(base_channels=64, use_graph=False, curriculum_boundaries=(0.2, 0.4))
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg


def test_curriculum_share_switches_at_boundaries() -> None:
    cfg = ModelConfig(curriculum_boundaries=(0.2, 0.6))
    shares = [cfg.curriculum_share(p) for p in (0.0, 0.19, 0.2, 0.59, 0.6, 1.0)]
    assert shares == [0.25, 0.25, 0.5, 0.5, 1.0, 1.0]
    assert math.isclose(ModelConfig().curriculum_share(0.5), 0.5)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"use_histology": False, "use_lr": False}, "nothing to condition on"),
        ({"base_channels": 0}, "base_channels"),
        ({"channel_mult": ()}, "channel_mult"),
        ({"graph_residual": 1.5}, "graph_residual"),
        ({"curriculum_boundaries": (0.5,)}, "curriculum_boundaries"),
        ({"curriculum_shares": (0.0, 0.5, 1.0)}, "curriculum_shares"),
        ({"modulation_window": 2}, "modulation_window"),
        ({"backbone": "resnet18"}, "model.backbone"),
    ],
)
def test_config_errors(changes: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**changes)


def test_parse_backbone() -> None:
    assert parse_backbone("builtin") == ("builtin", "")
    assert parse_backbone("timm:resnet18") == ("timm", "resnet18")
    assert parse_backbone("torchscript:/a/b:c.pt") == ("torchscript", "/a/b:c.pt")
    with pytest.raises(ConfigError):
        parse_backbone("timm:")


def test_pearson_topk_keeps_each_genes_strongest_neighbours() -> None:
    r = np.array(
        [[1.0, 0.9, -0.8, 0.1], [0.9, 1.0, 0.2, 0.3], [-0.8, 0.2, 1.0, 0.05], [0.1, 0.3, 0.05, 1.0]]
    )
    a = coexpression_adjacency(pearson=r, kind="pearson_topk", topk=1).numpy()
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-6)
    assert (np.count_nonzero(a, axis=1) == 2).all()  # self loop + one neighbour
    assert a[0, 1] > 0 and a[0, 2] == 0  # gene 0 keeps |0.9| over |−0.8|
    assert a[2, 0] > 0  # gene 2's strongest is |−0.8| with gene 0
    assert a[3, 1] > 0 and a[3, 0] == 0
