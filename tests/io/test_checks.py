"""Shared input checks, layout detection, lazy images and the remaining bad-input errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from diffst.geometry import AffineTransform, GeometryError
from diffst.io import InputError, detect_platform, read_legacy_st, read_sample, read_visium
from diffst.io._constants import is_control
from diffst.io.checks import (
    Extent,
    check_axes,
    check_counts,
    check_inside_image,
    check_pixel_size,
    require_columns,
)
from diffst.io.images import ChannelLast, ome_pixel_size_um, read_image
from diffst.synthetic import simulate_tissue, write_legacy_st, write_spaceranger_outs


def _extent(lo: tuple[float, float], hi: tuple[float, float]) -> Extent:
    e = Extent()
    e.update(np.array([lo, hi], dtype=float))
    return e


def test_inside_image_reports_how_far() -> None:
    check_inside_image(_extent((0.5, 0.5), (99.0, 49.0)), (50, 100), file="t.csv", field="x/y")
    tf = AffineTransform.from_pixel_size(0.5)
    with pytest.raises(GeometryError, match=r"t\.csv: field x/y .*rows \(y\).*30\.0 px ≈ 15\.0 µm"):
        check_inside_image(
            _extent((0, 0), (99, 80)), (50, 100), file="t.csv", field="x/y", transform=tf
        )


def test_axes_swap_detected_only_when_swapped_fits() -> None:
    shape = (1249, 1431)  # DeepSpot image (H, W)
    with pytest.raises(GeometryError, match=r"look swapped.*swap_xy=True"):
        check_axes(_extent((23, 104), (1218, 1394)), shape, file="a.h5ad", fields=("x", "y"))
    check_axes(_extent((104, 23), (1394, 1218)), shape, file="a.h5ad", fields=("x", "y"))
    with pytest.raises(GeometryError, match="maps outside the image"):
        check_axes(_extent((0, 0), (3000, 3000)), shape, file="a.h5ad", fields=("x", "y"))


def test_pixel_size_counts_columns() -> None:
    check_pixel_size(0.2125, 0.2126, file="e.xenium", field="pixel_size", source="OME")
    with pytest.raises(GeometryError, match=r"e\.xenium: field pixel_size = 0\.5 .*0\.2125"):
        check_pixel_size(0.5, 0.2125, file="e.xenium", field="pixel_size", source="OME")
    assert check_counts(np.array([0, 3.0]), file="m", field="X", require_integer=True)
    assert not check_counts(np.array([0.5]), file="m", field="X", require_integer=False)
    with pytest.raises(InputError, match="m: field X contains NaN"):
        check_counts(np.array([np.nan]), file="m", field="X", require_integer=False)
    with pytest.raises(InputError, match="negative"):
        check_counts(np.array([-1.0]), file="m", field="X", require_integer=False)
    with pytest.raises(InputError, match="non-integer"):
        check_counts(np.array([1.5]), file="m", field="X", require_integer=True)
    with pytest.raises(InputError, match=r"f\.csv: missing required column\(s\) \['b', 'c'\]"):
        require_columns(["a"], ["a", "b", "c"], "f.csv")


def test_control_names() -> None:
    for name in (
        "Blank-12",
        "NegControlProbe_00042",
        "NegControlCodeword_0500",
        "NegPrb3",
        "UnassignedCodeword_0001",
        "DeprecatedCodeword_0002",
        "antisense_ACTB",
        "Intergenic_Region_3",
        "SystemControl12",
    ):
        assert is_control(name), name
    for name in ("Gfap", "BLNK", "NEGR1", "Slc17a7"):
        assert not is_control(name), name


def test_lazy_ome_tiff(tmp_path: Path) -> None:
    data = np.arange(2 * 30 * 40, dtype=np.uint16).reshape(2, 30, 40)
    meta = {"axes": "CYX", "PhysicalSizeX": 0.2125, "PhysicalSizeY": 0.2125}
    tifffile.imwrite(tmp_path / "m.ome.tif", data, ome=True, metadata=meta)
    img = read_image(tmp_path / "m.ome.tif")
    assert isinstance(img, ChannelLast) and img.shape == (30, 40, 2)
    assert np.array_equal(img[5:7, 3:9, 1], data[1, 5:7, 3:9])
    assert np.array_equal(np.asarray(img), np.moveaxis(data, 0, -1))
    assert ome_pixel_size_um(tmp_path / "m.ome.tif") == pytest.approx((0.2125, 0.2125))
    tifffile.imwrite(tmp_path / "plain.tif", data[0])
    with pytest.raises(InputError, match="PhysicalSizeX"):
        ome_pixel_size_um(tmp_path / "plain.tif")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match=r"bad\.jpg: cannot decode"):
        read_image(tmp_path / "bad.jpg")


def test_detection(data_dir: Path, tmp_path: Path) -> None:
    assert detect_platform(data_dir / "giotto_vizgen_mini") == "merfish"
    assert detect_platform(data_dir / "giotto_cosmx_mini") == "cosmx"
    assert detect_platform(data_dir / "squidpy_visium" / "visium_outs") == "visium"
    assert detect_platform(data_dir / "squidpy_visium" / "test_data.h5ad") == "h5ad"
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"unknown file layout.*notes\.txt.*xenium: transcripts"):
        read_sample(tmp_path)
    with pytest.raises(InputError, match="um_per_px"):
        read_sample(data_dir / "giotto_cosmx_mini")


@pytest.fixture(scope="module")
def tissue() -> object:
    return simulate_tissue(width_um=400, height_um=300, n_genes=6, um_per_px=1.0, seed=2)


def test_legacy_st_bad_inputs(tissue: object, tmp_path: Path) -> None:
    counts, spots, image = write_legacy_st(tissue, tmp_path, pitch_um=100.0, spot_um=50.0)
    lines = gzip.open(counts, "rt").read().splitlines()

    def rewrite(rows: list[str]) -> None:
        with gzip.open(counts, "wt") as fh:
            fh.write("\n".join(rows) + "\n")

    rewrite([*lines, lines[1]])
    with pytest.raises(InputError, match=r"counts\.tsv\.gz: spot id '.*' .*more than once"):
        read_legacy_st(counts, spots, image, pitch_um=100.0)
    rewrite([*lines, "99x99\t" + "\t".join(["1"] * 6)])
    with pytest.raises(InputError, match=r"1 spot id\(s\) have no row in .*spots\.tsv.*99x99"):
        read_legacy_st(counts, spots, image, pitch_um=100.0)
    first = lines[1].split("\t")
    rewrite([lines[0], "\t".join([first[0], "0.5", *first[2:]]), *lines[2:]])
    with pytest.raises(InputError, match=r"counts\.tsv\.gz: field gene columns holds non-integer"):
        read_legacy_st(counts, spots, image, pitch_um=100.0)
    raw = gzip.compress("\n".join(lines).encode())
    counts.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"counts\.tsv\.gz.*(truncated|corrupt)"):
        read_legacy_st(counts, spots, image, pitch_um=100.0)


def test_visium_fullres_and_bad_matrix(tissue: object, tmp_path: Path) -> None:
    out = write_spaceranger_outs(tissue, tmp_path / "outs")
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, np.asarray(tissue.image.pixels), photometric="rgb")
    s = read_visium(out, image=full)
    assert s.image.shape_hw == (300, 400) and s.image.um_per_px == pytest.approx(1.0)
    small = tmp_path / "small.png"
    Image.fromarray(np.asarray(tissue.image.pixels)[::2, ::2]).save(small)
    with pytest.raises(
        GeometryError, match=r"tissue_hires_scalef = 0\.5 disagrees with 1 derived from the widths"
    ):
        read_visium(out, image=small)
    with h5py.File(out / "filtered_feature_bc_matrix.h5", "r+") as f:
        f["matrix/data"][0] = -3
    with pytest.raises(
        InputError, match=r"filtered_feature_bc_matrix\.h5: field matrix/data .*negative"
    ):
        read_visium(out, image=None)
