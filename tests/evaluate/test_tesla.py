"""The TESLA adapter against a stand-in module that behaves like TESLA 1.2.2's imputation
(superpixels on a pixel lattice; rows looked up by the integer index it built them with)."""

from __future__ import annotations

import sys
import types

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from diffst.evaluation.region import LRContext, PatchSet, region_from_patches
from diffst.evaluation.tesla import tesla_prediction
from diffst.geometry import AffineTransform
from diffst.io.sample import SpatialImage
from diffst.sections.binning import GridGeometry


def _fake_imputation(img, raw, cnt, genes, res=50, **_):  # type: ignore[no-untyped-def]
    """Each superpixel (a ``res``-px lattice over the image) takes its nearest spot's values."""
    module = sys.modules["TESLA.imputation"]
    rows = list(range(int(res), img.shape[0], int(res)))
    cols = list(range(int(res), img.shape[1], int(res)))
    sudo = pd.DataFrame({"x": np.repeat(rows, len(cols)), "y": cols * len(rows)})
    known = np.c_[raw.obs["pixel_x"].to_numpy(), raw.obs["pixel_y"].to_numpy()]
    d = ((sudo[["x", "y"]].to_numpy()[:, None, :] - known[None]) ** 2).sum(-1)
    dis = pd.DataFrame(d, index=sudo.index, columns=raw.obs.index)
    out = module.AnnData(np.zeros((len(sudo), len(genes))))
    out.obs = sudo
    out.var = raw.var
    for i in range(out.shape[0]):
        nearest = dis.loc[out.obs.index[i], :].sort_values().index[0]  # TESLA's lookup
        out.X[i, :] = raw[nearest].X[0]
    return out


@pytest.fixture()
def fake_tesla(monkeypatch: pytest.MonkeyPatch) -> None:
    package = types.ModuleType("TESLA")
    imputation = types.ModuleType("TESLA.imputation")
    imputation.AnnData = ad.AnnData  # type: ignore[attr-defined]
    package.imputation = _fake_imputation  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "TESLA", package)
    monkeypatch.setitem(sys.modules, "TESLA.imputation", imputation)
    monkeypatch.setitem(sys.modules, "cv2", types.ModuleType("cv2"))


def test_tesla_runs_on_the_sections_lr_grid(fake_tesla: None) -> None:
    f, hr_um = 2, 5.0
    lr = np.arange(16, dtype=np.float32).reshape(1, 4, 4) * 4  # 4×4 LR cells, 4 bins each
    geometry = GridGeometry((0.0, 0.0), hr_um, f, (8, 8))
    image = SpatialImage(
        np.zeros((80, 80, 3), np.uint8), ("R", "G", "B"), AffineTransform.from_pixel_size(0.5)
    )
    sample = types.SimpleNamespace(image=image)  # the adapter reads the section's image only
    hr = np.zeros((1, 1, 4, 4), np.float32)  # the held-out patch: LR cells (2, 2)…(3, 3)
    truth = PatchSet(
        hr, lr[None, :, 2:, 2:], np.ones((1, 4, 4), bool), np.ones((1, 2, 2), bool),
        np.array([[4, 4]]), ("A",), f,
    )  # fmt: skip
    region = region_from_patches(truth).with_context(
        LRContext(lr, np.ones((4, 4), bool), np.full((4, 4), 4.0))
    )
    pred = tesla_prediction(sample, region, geometry)
    assert pred.unavailable is None and pred.mean is not None and pred.mean.shape == (1, 4, 4)
    # superpixels every 10 px (one HR bin); a superpixel on an odd bin row and column sits on
    # an LR cell's centre, so it takes that cell's measured-unit mean (others fall on ties)
    odd = pred.mean[0][np.ix_([1, 3], [1, 3])]
    np.testing.assert_allclose(odd, lr[0, 2:, 2:] / 4)
    assert "AnnData" in dir(sys.modules["TESLA.imputation"])
    assert sys.modules["TESLA.imputation"].AnnData is ad.AnnData  # restored afterwards
