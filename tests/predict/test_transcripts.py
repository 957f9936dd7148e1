"""predict() on a transcript sample (synthetic): LR pseudo-spots exactly as ``diffst prepare``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from diffst.inference.api import predict
from diffst.inference.config import PredictConfig
from diffst.io.sample import SpatialSample
from diffst.sections.binning import pool_grid, scan_transcripts
from diffst.sections.config import PrepareConfig
from diffst.sections.inputs import (
    build_section_inputs,
    checkpoint_section_inputs,
    section_geometry,
)
from diffst.synthetic import simulate_tissue

from .conftest import FACTOR, PATCH, store_meta

HR = 10.0
# the raw network estimate (the projection onto the spots, on by default, has its own tests)
FAST = PredictConfig(
    steps=1, n_samples=2, batch_size=8, device="cpu", n_figure_genes=0, project_to_spots=False
)


@pytest.fixture(scope="module")
def section() -> SpatialSample:
    return simulate_tissue(width_um=400.0, height_um=400.0, n_genes=6, um_per_px=2.0, seed=3)


GENES = [f"Gene00{k}" for k in range(6)]


@pytest.mark.parametrize("lr", ["grid", "visium"])
def test_lr_windows_match_prepare(section: SpatialSample, lr: str) -> None:
    meta = store_meta(GENES, lr, hr_um=HR)
    inputs = checkpoint_section_inputs(section, tuple(GENES), meta)
    pcfg = PrepareConfig(hr_um=HR, factor=FACTOR, lr=lr, patch=PATCH, stride=PATCH)  # type: ignore[arg-type]
    scan = scan_transcripts(section.transcripts)  # type: ignore[arg-type]
    geometry = section_geometry(section, pcfg, scan)
    ref = build_section_inputs(section, tuple(GENES), geometry, pcfg, scan)
    assert inputs.geometry == geometry
    np.testing.assert_array_equal(inputs.tissue, ref.tissue)
    for r, c in ((0, 0), (12, 24), (28, 28)):
        lr_mine, mask_mine = inputs.lr_window(r, c, PATCH)
        lr_ref, mask_ref = ref.lr_window(r, c, PATCH)
        sl = (slice(None), slice(0, lr_ref.shape[1]), slice(0, lr_ref.shape[2]))
        np.testing.assert_array_equal(lr_mine[sl], lr_ref)
        np.testing.assert_array_equal(mask_mine[sl[1:]], mask_ref)


def test_grid_projection_reproduces_lr_cell_totals(
    make_checkpoint: Callable[..., Path], section: SpatialSample, tmp_path: Path
) -> None:
    ckpt = make_checkpoint(GENES, lr="grid", hr_um=HR)
    cfg = replace(FAST, project_to_spots=True)
    adata = predict(ckpt, section, tmp_path / "t.h5ad", cfg)
    assert adata is not None
    meta = adata.uns["diffst"]
    assert meta["lr_layout"] == "grid" and adata.n_vars == 6
    h, w = (int(v) for v in meta["geometry"]["shape_hr"])
    mean = np.zeros((6, h, w))
    mean[:, adata.obs["bin_row"], adata.obs["bin_col"]] = adata.X.T
    inputs = checkpoint_section_inputs(section, tuple(GENES), store_meta(GENES, "grid", hr_um=HR))
    measured = pool_grid(inputs.hr, FACTOR)
    cells = pool_grid(inputs.tissue, FACTOR) > 0
    np.testing.assert_allclose(pool_grid(mean, FACTOR)[:, cells], measured[:, cells], rtol=1e-4)
    report = meta["spot_consistency"]
    assert report["n_spots"] == int(cells.sum()) and report["projected"]


def test_image_channels_and_pixel_size_are_checked(
    make_checkpoint: Callable[..., Path],
    section: SpatialSample,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from diffst.io.sample import InputError

    ckpt = make_checkpoint(GENES, lr="grid", hr_um=HR, channels=2)
    with pytest.raises(InputError, match=r"3 channel\(s\).*trained on 2"):
        predict(ckpt, section, tmp_path / "c.h5ad", FAST)
    assert list(tmp_path.iterdir()) == []
    ckpt = make_checkpoint(
        GENES, lr="grid", hr_um=HR, channels=1, image={"channels": ["G"], "um_per_px": 1.0}
    )
    with caplog.at_level("WARNING", logger="diffst.inference"):
        adata = predict(ckpt, section, tmp_path / "g.h5ad", FAST)
    assert adata is not None
    assert "differs from training" in caplog.text and "2 µm/px" in caplog.text


def _as_bin_array(section: SpatialSample, bin_um: float) -> SpatialSample:
    """The section's molecules summed into square bins of ``bin_um`` (a Visium HD-like table)."""
    from diffst.io.sample import SpotTable
    from diffst.sections.binning import GridGeometry, bin_transcripts

    assert section.image is not None
    grid = GridGeometry.covering(section.image.extent_um(), bin_um, 1)
    counts = bin_transcripts(section.transcripts, tuple(GENES), grid)  # type: ignore[arg-type]
    i, j = np.nonzero(counts.sum(axis=0))
    xs, ys = grid.bin_centres_um()
    spots = SpotTable(
        counts=counts[:, i, j].T, genes=tuple(GENES), centers_um=np.column_stack([xs[j], ys[i]]),
        diameter_um=bin_um, shape="square", lattice="square", pitch_um=bin_um,
    )  # fmt: skip
    return SpatialSample("hd", "visium_hd", image=section.image, spots=spots,
                         tissue_mask=section.tissue_mask)  # fmt: skip


@pytest.mark.parametrize("lr", ["grid", "visium"])
def test_bin_arrays_are_pooled_like_molecules(section: SpatialSample, lr: str) -> None:
    meta = store_meta(GENES, lr, hr_um=HR)
    ref = checkpoint_section_inputs(section, tuple(GENES), meta)
    hd = checkpoint_section_inputs(_as_bin_array(section, 2.0), tuple(GENES), meta)
    assert hd.geometry == ref.geometry and hd.lr_layout == ref.lr_layout == lr
    np.testing.assert_array_equal(hd.hr, ref.hr)
    np.testing.assert_array_equal(hd.tissue, ref.tissue)
    np.testing.assert_array_equal(hd.spot_centres_um, ref.spot_centres_um)
    if lr == "grid":  # exact: 2 µm bins tile the 10 µm bins
        np.testing.assert_array_equal(hd.spot_counts, ref.spot_counts)
    else:  # spot circles cut bins: a bin counts when its centre is inside the spot
        total = ref.spot_counts.sum()
        assert abs(hd.spot_counts.sum() - total) < 0.1 * total
    np.testing.assert_allclose(hd.lr_window(12, 12, PATCH)[0], ref.lr_window(12, 12, PATCH)[0],
                               rtol=0.25 if lr == "visium" else 0)  # fmt: skip


def test_a_model_trained_on_other_stains_is_refused(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """Same number of channels, other stains (polyT given to a DAPI model): refused, with the
    option that reads the right mosaic; the trained channel names are readable up front."""
    from diffst.inference.setup import checkpoint_image_channels
    from diffst.io.sample import InputError

    fluo = simulate_tissue(width_um=200.0, height_um=200.0, n_genes=6, um_per_px=2.0, seed=3,
                           image_kind="fluorescence")  # fmt: skip
    assert fluo.image is not None and fluo.image.channels == ("DAPI", "polyT")
    polyt = replace(
        fluo, image=replace(fluo.image, pixels=np.asarray(fluo.image.pixels)[:, :, 1:],
                            channels=("polyT",)),
    )  # fmt: skip
    ckpt = make_checkpoint(GENES, lr="grid", hr_um=HR, channels=1, image={"channels": ["DAPI"]})
    assert checkpoint_image_channels(ckpt) == ("DAPI",)
    with pytest.raises(
        InputError, match=r"\['polyT'\].*trained on \['DAPI'\].*--image-channels DAPI"
    ):
        predict(ckpt, polyt, tmp_path / "p.h5ad", FAST)
    assert list(tmp_path.iterdir()) == []
    assert predict(ckpt, fluo, tmp_path / "d.h5ad", FAST) is not None  # DAPI picked by name


def test_predict_cli_reads_the_trained_mosaics_of_a_merfish_section(
    make_checkpoint: Callable[..., Path],
) -> None:
    import argparse

    from diffst.commands.predict import _merfish_channels

    both = make_checkpoint(GENES, lr="grid", hr_um=HR, channels=2,
                           image={"channels": ["DAPI", "polyT"]})  # fmt: skip
    rgb = make_checkpoint(GENES, lr="grid", hr_um=HR, channels=3,
                          image={"channels": ["R", "G", "B"]})  # fmt: skip
    args = argparse.Namespace(input="merfish_mini", platform="auto", checkpoint=both)
    assert _merfish_channels(args) == ["DAPI", "polyT"]
    assert _merfish_channels(argparse.Namespace(**{**vars(args), "checkpoint": rgb})) is None
    other = argparse.Namespace(**{**vars(args), "input": "visium_mini"})
    assert _merfish_channels(other) is None


def test_a_region_is_the_sections_own_lr_grid_cut_to_it(section: SpatialSample) -> None:
    """The region's grid is the section's, snapped to whole LR cells: same bins, same counts,
    same tissue, the same grid-pooled LR windows; only molecules on it are binned."""
    from diffst.sections.inputs import region_geometry

    meta = store_meta(GENES, "grid", hr_um=HR)
    whole = checkpoint_section_inputs(section, tuple(GENES), meta)
    region = (105.0, 95.0, 290.0, 310.0)
    part = checkpoint_section_inputs(section, tuple(GENES), meta, region)
    geo = part.geometry
    assert geo == region_geometry(whole.geometry, region)
    lr = whole.geometry.lr_um
    r0 = round((geo.origin_um[1] - whole.geometry.origin_um[1]) / HR)
    c0 = round((geo.origin_um[0] - whole.geometry.origin_um[0]) / HR)
    assert r0 % FACTOR == 0 and c0 % FACTOR == 0  # whole LR cells of the section
    x0, y0, x1, y1 = geo.extent_um()
    assert x0 <= 105.0 < 290.0 <= x1 and y0 <= 95.0 < 310.0 <= y1 and x1 - x0 < 290 - 105 + 2 * lr
    h, w = geo.shape_hr
    assert part.hr is not None and whole.hr is not None
    np.testing.assert_array_equal(part.hr, whole.hr[:, r0 : r0 + h, c0 : c0 + w])
    np.testing.assert_array_equal(part.tissue, whole.tissue[r0 : r0 + h, c0 : c0 + w])
    np.testing.assert_array_equal(part.lr_window(0, 0, PATCH)[0],
                                  whole.lr_window(r0, c0, PATCH)[0])  # fmt: skip


def test_predict_a_region_only(make_checkpoint, section: SpatialSample, tmp_path: Path) -> None:
    ckpt = make_checkpoint(GENES, lr="grid", hr_um=HR)
    region = (100.0, 100.0, 260.0, 240.0)
    cfg = replace(FAST, region_um=region)
    adata = predict(ckpt, section, tmp_path / "part.h5ad", cfg)
    assert adata is not None and adata.n_obs > 0
    xs, ys = adata.obs["x_um"], adata.obs["y_um"]
    lr = HR * FACTOR
    assert xs.min() > region[0] - lr and xs.max() < region[2] + lr
    assert ys.min() > region[1] - lr and ys.max() < region[3] + lr
    whole = predict(ckpt, section, tmp_path / "whole.h5ad", FAST)
    assert whole is not None and adata.n_obs < whole.n_obs
    with pytest.raises(Exception, match="outside the section"):
        predict(
            ckpt, section, tmp_path / "none.h5ad", replace(FAST, region_um=(5e4, 5e4, 6e4, 6e4))
        )
