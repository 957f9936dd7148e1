"""Visium reader on squidpy's Space Ranger fixture and the .h5ad reader on test_data.h5ad
and the DeepSpot Xenium h5ad (numbers from data/README.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from diffst.datasets import visium_h5ad_mini, visium_mini
from diffst.geometry import GeometryError
from diffst.io import InputError, read_h5ad, read_visium


def test_visium_outs_numbers() -> None:
    s = visium_mini()
    sp = s.spots
    assert sp is not None and sp.counts.shape == (100, 100)
    assert sp.counts.nnz == 656 and sp.is_raw_counts
    assert sp.genes[0] == "ENSG00000243485" and sp.gene_ids == sp.genes
    assert sp.lattice == "hex" and sp.shape == "circle" and sp.diameter_um == 55.0
    assert sp.pitch_um == pytest.approx(100.0, abs=0.5)
    assert sp.array_coords is not None and sp.array_coords[:, 0].min() == 3
    um_per_px = 65.0 / 89.42751063343188
    assert s.metadata["um_per_px_fullres"] == pytest.approx(um_per_px)
    # first row of tissue_positions_list.csv: AAACAAGTATCTCCCA-1, row 50, col 102, px (8513, 9811)
    assert sp.ids[0] == "AAACAAGTATCTCCCA-1"
    assert sp.centers_um[0] == pytest.approx([9811 * um_per_px, 8513 * um_per_px])
    img = s.image
    assert img is not None and img.shape_hw == (600, 600)
    assert img.um_to_px.apply(sp.centers_um[:1])[0] == pytest.approx(
        [9811 * 0.045004502, 8513 * 0.045004502]
    )


def _outs_copy(data_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "outs"
    shutil.copytree(data_dir / "squidpy_visium" / "visium_outs", dst)
    return dst


def test_blank_hires_and_headered_positions(data_dir: Path, tmp_path: Path) -> None:
    outs = _outs_copy(data_dir, tmp_path)
    with pytest.raises(InputError, match=r"tissue_hires_image\.png.*blank"):
        read_visium(outs, image="hires")
    old = outs / "spatial" / "tissue_positions_list.csv"
    header = "barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,pxl_col_in_fullres\n"
    (outs / "spatial" / "tissue_positions.csv").write_text(header + old.read_text())
    old.unlink()
    a = read_visium(outs, image=None)
    assert a.spots is not None and a.spots.counts.shape == (100, 100)
    assert a.source_files["positions"].name == "tissue_positions.csv"


def test_wrong_scalefactor_breaks_pitch(data_dir: Path, tmp_path: Path) -> None:
    outs = _outs_copy(data_dir, tmp_path)
    sf = outs / "spatial" / "scalefactors_json.json"
    sf.write_text(sf.read_text().replace("89.42751063343188", "60.0"))
    with pytest.raises(GeometryError, match=r"scalefactors_json\.json.*spot_diameter_fullres.*149"):
        read_visium(outs, image=None)


def test_missing_barcode_position(data_dir: Path, tmp_path: Path) -> None:
    outs = _outs_copy(data_dir, tmp_path)
    pos = outs / "spatial" / "tissue_positions_list.csv"
    pos.write_text("".join(pos.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(InputError, match=r"1 barcode.*AAACAAGTATCTCCCA-1"):
        read_visium(outs, image=None)


def test_h5ad_log_normalised_not_raw() -> None:
    s = visium_h5ad_mini()
    sp = s.spots
    assert sp is not None and sp.counts.shape == (49, 1999)
    assert not sp.is_raw_counts
    with pytest.raises(InputError, match="not raw counts"):
        sp.require_raw_counts()
    assert sp.gene_ids[0].startswith("ENSMUSG")
    assert s.image is not None and s.image.shape_hw == (1717, 950)
    assert s.image.um_per_px == pytest.approx(0.7267, abs=1e-4)
    assert sp.pitch_um == pytest.approx(100.0, abs=1.5)  # 137–138 px × 0.7267 µm/px


def test_h5ad_images(data_dir: Path) -> None:
    path = data_dir / "squidpy_visium" / "test_data.h5ad"
    with pytest.raises(InputError, match=r"\['hires'\] is not an image"):
        read_h5ad(path, image="hires")
    low = read_h5ad(path, image="lowres")
    assert low.image is not None and low.image.shape_hw == (88, 49)
    px = low.image.um_to_px.apply(low.spots.centers_um)
    assert px.min() >= 0 and px[:, 0].max() < 49 and px[:, 1].max() < 88
    with pytest.raises(GeometryError, match=r"um_per_px = 1 .*spot_diameter_fullres"):
        read_h5ad(path, image=None, um_per_px=1.0)


def test_deepspot_swapped_axes(shared_data_dir: Path) -> None:
    d = shared_data_dir / "deepspot_xenium_ncbi858"
    kw = dict(obs_xy=("x_pixel", "y_pixel"), image=d / "NCBI858.jpg", spot_diameter_um=10.0)
    with pytest.raises(InputError, match="pixel size is not stated"):
        read_h5ad(d / "NCBI858.h5ad", **kw)
    with pytest.raises(
        GeometryError, match=r"x_pixel'\]/obs\['y_pixel'\] look swapped.*swap_xy=True"
    ):
        read_h5ad(d / "NCBI858.h5ad", um_per_px=0.5, **kw)
    s = read_h5ad(d / "NCBI858.h5ad", um_per_px=0.5, swap_xy=True, **kw)
    sp = s.spots
    assert sp is not None and sp.counts.shape == (200, 338) and sp.is_raw_counts
    assert int(sp.counts.sum()) == 45_623
    px = s.image.um_to_px.apply(sp.centers_um)
    assert px[:, 0].max() < 1431 and px[:, 1].max() < 1249
    assert np.all(px >= 0)
