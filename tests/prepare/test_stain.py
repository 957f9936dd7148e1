"""Stain normalisation of H&E views: Reinhard transfer with one transform per section, applied
by the same function in prepare and predict, the reference carried by the store/checkpoint."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from diffst.config import ConfigError
from diffst.io.sample import InputError, SpatialSample
from diffst.preparation.api import prepare
from diffst.sections.binning import GridGeometry
from diffst.sections.config import PrepareConfig, SplitConfig, ViewConfig
from diffst.sections.inputs import SectionInputs, window_inputs
from diffst.sections.stain import StainStats, StainTransform, stain_stats
from diffst.sections.views import channel_indices, intensity_range, section_stain, to_uint8
from diffst.synthetic import simulate_tissue

VIEWS = ViewConfig(tissue_px=32, cell_grid=4, tile_px=8, stain="reinhard")


@pytest.fixture(scope="module")
def section() -> SpatialSample:
    return simulate_tissue(width_um=480.0, height_um=480.0, n_genes=4, um_per_px=2.0, seed=5)


def _cast(sample: SpatialSample) -> SpatialSample:
    """The same tissue under another stain: bluer haematoxylin, paler eosin (a colour cast)."""
    assert sample.image is not None
    px = sample.image.pixels.astype(np.float64)
    px = px * np.array([0.80, 0.92, 1.10]) + np.array([10.0, -5.0, 12.0])
    image = dataclasses.replace(sample.image, pixels=np.clip(px, 0, 255).astype(np.uint8))
    return dataclasses.replace(sample, image=image)


def _transform(sample: SpatialSample, reference: StainStats | None) -> StainTransform:
    assert sample.image is not None
    idx = channel_indices(sample.image, ())
    ranges = intensity_range(sample.image, idx, VIEWS.intensity_percentiles)
    return section_stain(sample.image, idx, ranges, reference)


def _views(sample: SpatialSample, stain: StainTransform | None) -> np.ndarray:
    assert sample.image is not None
    geometry = GridGeometry.covering(sample.image.extent_um(), 10.0, 4)
    inputs = SectionInputs(
        ("g",), geometry, np.ones(geometry.shape_hr, bool), "grid",
        hr=np.zeros((1, *geometry.shape_hr), np.int32),
    )  # fmt: skip
    idx = channel_indices(sample.image, ())
    ranges = intensity_range(sample.image, idx, VIEWS.intensity_percentiles)
    w = window_inputs(inputs, 8, 8, 24, image=sample.image, views=VIEWS, ranges=ranges,
                      stain=stain)  # fmt: skip
    assert w.tissue_view is not None
    return w.tissue_view.astype(np.float64)


def test_transfer_reaches_the_reference_statistics(section: SpatialSample) -> None:
    reference = _transform(section, None).reference
    cast = _cast(section)
    moved = _transform(cast, reference)
    assert cast.image is not None
    idx = channel_indices(cast.image, ())
    ranges = intensity_range(cast.image, idx, VIEWS.intensity_percentiles)
    stretched = to_uint8(np.moveaxis(cast.image.pixels, -1, 0).astype(np.float32), ranges)
    got = stain_stats(np.moveaxis(moved(stretched), 0, -1))
    np.testing.assert_allclose(got.mean, reference.mean, atol=1.5)
    np.testing.assert_allclose(got.std, reference.std, rtol=0.1)


def test_a_section_normalised_to_itself_is_unchanged(section: SpatialSample) -> None:
    own = _transform(section, None)
    assert own.source == own.reference
    np.testing.assert_allclose(_views(section, own), _views(section, None), atol=1.0)


def test_predict_views_of_a_recoloured_section_match_the_training_views(
    section: SpatialSample,
) -> None:
    reference = _transform(section, None).reference
    cast = _cast(section)
    train = _views(section, None)
    raw_gap = np.abs(_views(cast, None) - train).mean()
    normalised_gap = np.abs(_views(cast, _transform(cast, reference)) - train).mean()
    assert normalised_gap < 0.35 * raw_gap, (normalised_gap, raw_gap)


def test_fluorescence_and_bad_settings_are_refused() -> None:
    fluo = simulate_tissue(
        width_um=200.0, height_um=200.0, n_genes=2, um_per_px=2.0, image_kind="fluorescence"
    )
    assert fluo.image is not None
    idx = channel_indices(fluo.image, ())
    with pytest.raises(ConfigError, match="normalises 3-channel H&E"):
        section_stain(fluo.image, idx, intensity_range(fluo.image, idx, (0.5, 99.5)))
    with pytest.raises(ConfigError, match=r"views\.stain"):
        ViewConfig(stain="macenko").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="std > 0"):
        StainStats.from_dict({"mean": [50, 0, 0], "std": [1, 0, 1]})


def test_the_store_records_the_reference(section: SpatialSample, tmp_path: Path) -> None:
    cfg = PrepareConfig(
        genes=3, hr_um=10.0, factor=4, patch=8, stride=8, views=VIEWS,
        split=SplitConfig(block_um=160.0, layout="rows"),
    )  # fmt: skip
    store = prepare(section, tmp_path / "store", cfg)
    manifest = json.loads((store.path / "manifest.json").read_text())
    assert manifest["views"]["stain"] == "reinhard"
    reference = StainStats.from_dict(manifest["image"]["stain"]["reference"])
    assert reference == _transform(section, None).reference
    plain = prepare(section, tmp_path / "plain", dataclasses.replace(cfg, views=ViewConfig(
        tissue_px=32, cell_grid=4, tile_px=8)))  # fmt: skip
    assert "stain" not in json.loads((plain.path / "manifest.json").read_text())["image"]
    a = np.load(store.path / "train" / "tissue.npy").astype(int)
    b = np.load(plain.path / "train" / "tissue.npy").astype(int)
    assert np.abs(a - b).max() <= 1  # the training image is its own reference


def test_checkpoint_side_needs_the_reference_and_the_same_modality(
    section: SpatialSample,
) -> None:
    from diffst.inference.config import PredictConfig
    from diffst.inference.setup import tile_context
    from tests.predict.conftest import store_meta

    meta = store_meta(["Gene000", "Gene001", "Gene002", "Gene003"], "grid", hr_um=10.0)
    meta["views"] = {**meta.get("views", {}), "stain": "reinhard"}
    meta["image"] = {**meta.get("image", {}), "channels": ["R", "G", "B"], "kind": "he"}
    meta["image_channels"] = 3
    with pytest.raises(InputError, match=r"stain\.reference is missing"):
        tile_context(meta, True, section, PredictConfig())
    meta["image"]["stain"] = {
        "method": "reinhard",
        "reference": {"mean": [60, 20, -10], "std": [10, 5, 5]},
    }
    ctx = tile_context(meta, True, _cast(section), PredictConfig())
    assert ctx.stain is not None and ctx.stain.reference.mean == (60.0, 20.0, -10.0)
    meta["image"]["kind"] = "fluorescence"
    with pytest.raises(InputError, match=r"image kind.*trained on fluorescence"):
        tile_context(meta, True, section, PredictConfig())
