"""Per-gene figures: image resampled on the section grid, four panels, atomic PNG."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from diffst.geometry import AffineTransform
from diffst.inference.figures import image_on_grid, write_gene_figures
from diffst.io.sample import SpatialImage


@dataclass(frozen=True)
class Grid:
    origin_um: tuple[float, float] = (0.0, 0.0)
    hr_um: float = 10.0
    shape_hr: tuple[int, int] = (8, 12)


def _image() -> SpatialImage:
    px = np.zeros((40, 60, 3), dtype=np.uint8)
    px[:, 30:] = 255  # right half white (x ≥ 60 µm at 2 µm/px)
    return SpatialImage(px, ("R", "G", "B"), AffineTransform.from_pixel_size(2.0))


def test_image_on_grid_follows_the_transform() -> None:
    rgb = image_on_grid(_image(), Grid(), supersample=2)
    assert rgb.shape == (16, 24, 3)
    # sample columns at 5 µm pitch: x < 60 µm black, x ≥ 60 µm white; beyond y = 80 µm white
    np.testing.assert_array_equal(rgb[:, :12, 0], 0.0)
    np.testing.assert_array_equal(rgb[:, 12:, 0], 1.0)


def test_write_gene_figures(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mean = rng.gamma(2.0, 1.0, size=(2, 8, 12))
    mean[:, 0, 0] = np.nan
    lr = rng.poisson(20.0, size=(2, 2, 3)).astype(float)
    paths = write_gene_figures(
        tmp_path / "fig",
        ["Gad1", "A/B"],
        ["A/B"],
        mean,
        mean * 0.1,
        lr,
        image_on_grid(_image(), Grid()),
        Grid(),
        factor=4,
    )
    assert [p.name for p in paths] == ["A_B.png"]
    with Image.open(paths[0]) as im:
        assert im.size == (1600, 420)
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["A_B.png"]
    no_lr = write_gene_figures(
        tmp_path / "fig", ["Gad1", "A/B"], ["Gad1"], mean, mean, None, None, Grid(), factor=4
    )
    assert no_lr[0].exists()
