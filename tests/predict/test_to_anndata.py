"""Output AnnData: documented layout, h5ad round trip, scanpy plotting, atomic writing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anndata
import numpy as np
import pytest

from diffst.geometry import AffineTransform
from diffst.inference.to_anndata import build_anndata, hires_image, write_h5ad_atomic
from diffst.inference.uncertainty import Stat
from diffst.io.sample import SpatialImage


@dataclass(frozen=True)
class Grid:
    origin_um: tuple[float, float] = (20.0, 40.0)
    hr_um: float = 8.0
    shape_hr: tuple[int, int] = (6, 9)


def _image(kind: str = "he", channels: int = 3) -> SpatialImage:
    rng = np.random.default_rng(0)
    px = rng.integers(0, 255, size=(200, 240, channels), dtype=np.uint8)
    names = ("R", "G", "B") if channels == 3 else tuple(f"c{k}" for k in range(channels))
    # 0.5 µm/px, pixel (0, 0) at (10, 30) µm
    return SpatialImage(px, names, AffineTransform.from_pixel_size(0.5, (10.0, 30.0)), kind=kind)


def _adata(image: SpatialImage | None = None) -> tuple[anndata.AnnData, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    stats = rng.gamma(2.0, 1.0, size=(5, 3, 6, 9)).astype(np.float32)
    tissue = np.zeros((6, 9), dtype=bool)
    tissue[1:5, 2:8] = True
    meta = {
        "sampler": "ddim",
        "steps": 10,
        "seed": 3,
        "n_samples": 8,
        "checkpoint_sha256": "ab",
        "config": {"overlap_bins": None, "figure_genes": ("A",), "eta": 0.0},
        "geometry": {"origin_um": (20.0, 40.0), "hr_um": 8.0},
    }
    adata = build_anndata(
        stats,
        tissue,
        Grid(),
        ["A", "B", "C"],
        image=image,
        library_id="lib",
        metadata=meta,
        hires_max_px=100,
        lowres_max_px=40,
    )
    return adata, stats, tissue


def test_layout_matches_documentation() -> None:
    adata, stats, tissue = _adata(_image())
    assert adata.shape == (int(tissue.sum()), 3)
    assert list(adata.var_names) == ["A", "B", "C"]
    assert adata.X.dtype == np.float32
    first = adata.obs.iloc[0]
    r, c = int(first["bin_row"]), int(first["bin_col"])
    assert (r, c) == (1, 2)
    np.testing.assert_allclose(adata.X[0], stats[Stat.MEAN, :, r, c])
    for name, stat in (
        ("std", Stat.STD),
        ("q05", Stat.Q05),
        ("q95", Stat.Q95),
        ("sample_mean", Stat.SAMPLE_MEAN),
    ):
        np.testing.assert_allclose(adata.layers[name][0], stats[stat, :, r, c])
    # bin (1, 2) centre: x = 20 + 2.5·8 = 40 µm, y = 40 + 1.5·8 = 52 µm → px (60, 44)
    assert (first["x_um"], first["y_um"]) == (40.0, 52.0)
    np.testing.assert_allclose(adata.obsm["spatial"][0], [60.0, 44.0])
    lib = adata.uns["spatial"]["lib"]
    sf = lib["scalefactors"]
    assert sf["spot_diameter_fullres"] == pytest.approx(16.0)  # 8 µm bin / 0.5 µm/px
    assert sf["tissue_hires_scalef"] == pytest.approx(1 / 3)  # 240 px → ≤ 100 px, step 3
    assert sf["tissue_lowres_scalef"] == pytest.approx(1 / 6)  # 240 px → ≤ 40 px, step 6
    assert lib["images"]["hires"].shape == (67, 80, 3)
    assert lib["images"]["lowres"].shape == (34, 40, 3)
    assert {img.dtype for img in lib["images"].values()} == {np.dtype(np.uint8)}
    assert adata.uns["diffst"]["sampler"] == "ddim"
    assert "overlap_bins" not in adata.uns["diffst"]["config"]  # None dropped for h5ad


def test_h5ad_round_trip(tmp_path: Path) -> None:
    adata, _, _ = _adata(_image())
    path = write_h5ad_atomic(adata, tmp_path / "new" / "pred.h5ad")
    back = anndata.read_h5ad(path)
    np.testing.assert_array_equal(back.X, adata.X)
    np.testing.assert_array_equal(back.layers["q95"], adata.layers["q95"])
    np.testing.assert_array_equal(back.obsm["spatial"], adata.obsm["spatial"])
    np.testing.assert_array_equal(
        back.uns["spatial"]["lib"]["images"]["hires"],
        adata.uns["spatial"]["lib"]["images"]["hires"],
    )
    assert back.uns["diffst"]["steps"] == 10
    assert list(back.uns["diffst"]["config"]["figure_genes"]) == ["A"]
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["pred.h5ad"]


def test_scanpy_spatial_plot_runs() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    adata, _, _ = _adata(_image())
    sc.pl.spatial(adata, color="B", library_id="lib", show=False)
    sc.pl.spatial(adata, color="B", layer="std", library_id="lib", show=False)
    sc.pl.spatial(adata, color="B", library_id="lib", img_key="lowres", show=False)
    plt.close("all")


def test_one_channel_image_is_stored_small(tmp_path: Path) -> None:
    """A 16-bit DAPI crop: uint8 hires/lowres copies, not float32 RGB (4 bytes per value)."""
    rng = np.random.default_rng(2)
    dapi = rng.integers(0, 4000, size=(900, 1000, 1), dtype=np.uint16)
    image = SpatialImage(dapi, ("DAPI",), AffineTransform.from_pixel_size(0.5), kind="fluorescence")
    stats = np.ones((5, 3, 6, 9), np.float32)
    adata = build_anndata(stats, np.ones((6, 9), bool), Grid(), ["A", "B", "C"], image=image,
                          library_id="lib", metadata={})  # fmt: skip
    images = adata.uns["spatial"]["lib"]["images"]
    assert images["hires"].shape == (900, 1000, 3) and images["lowres"].shape == (450, 500, 3)
    assert images["hires"].dtype == np.uint8
    np.testing.assert_array_equal(images["hires"][..., 0], images["hires"][..., 2])  # grey
    sf = adata.uns["spatial"]["lib"]["scalefactors"]
    assert (sf["tissue_hires_scalef"], sf["tissue_lowres_scalef"]) == (1.0, 0.5)
    path = write_h5ad_atomic(adata, tmp_path / "pred.h5ad")
    assert path.stat().st_size < 4_000_000  # a float32 RGB hires copy alone was 10.8 MB


def test_fluorescence_becomes_grey_rgb_and_no_image_uses_um() -> None:
    rgb, scalef = hires_image(_image("fluorescence", 1), max_px=300)
    assert rgb.shape == (200, 240, 3) and scalef == 1.0
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    adata, _, _ = _adata(None)
    np.testing.assert_allclose(adata.obsm["spatial"][0], [40.0, 52.0])
    assert adata.uns["diffst"]["spatial_units"] == "um"


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    adata, _, _ = _adata(None)

    def broken(self: anndata.AnnData, path: Path, **kw: object) -> None:
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(anndata.AnnData, "write_h5ad", broken)
    with pytest.raises(OSError, match="disk full"):
        write_h5ad_atomic(adata, tmp_path / "pred.h5ad")
    assert list(tmp_path.iterdir()) == []


def test_gene_table_maps_symbols_and_ids() -> None:
    from diffst.inference.api import gene_table
    from diffst.io.sample import SpatialSample, SpotTable

    spots = SpotTable(
        counts=np.array([[1, 2], [3, 4]]), genes=("Gfap", "Mbp"),
        centers_um=np.zeros((2, 2)), diameter_um=55.0, gene_ids=("ENSG1", "ENSG2"),
    )  # fmt: skip
    sample = SpatialSample("s", "visium", spots=spots)
    stats = np.ones((5, 2, 3))
    by_name = gene_table(["Mbp", "Gfap"], sample, spots.counts.toarray(), stats, {})
    assert by_name["gene_ids"] == ["ENSG2", "ENSG1"] and "gene_symbols" not in by_name
    by_id = gene_table(["ENSG2"], sample, spots.counts.toarray()[:, 1:], stats[:, :1], {})
    assert by_id["gene_symbols"] == ["Mbp"] and np.isnan(by_id["spot_pcc"]).all()
    np.testing.assert_array_equal(by_id["lr_counts"], [6.0])
