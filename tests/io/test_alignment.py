"""Implausible image alignment is refused with its likely cause (bundled MERFISH crop), and
images that do not show the tissue pass."""

from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffst.cli import main
from diffst.geometry import AffineTransform, GeometryError
from diffst.io import read_merfish
from diffst.io.alignment import (
    AlignmentGrid,
    AlignmentReport,
    assess_alignment,
    check_alignment,
    image_signal,
    warn_doubtful,
)

MINI = "giotto_vizgen_mini"
TRANSFORM = "micron_to_pixel_transform.csv"


@pytest.fixture
def crop(data_dir: Path, tmp_path: Path) -> Path:
    """A copy of the bundled crop with the z0 DAPI mosaic only."""
    root = tmp_path / "crop"
    (root / "images").mkdir(parents=True)
    shutil.copy(data_dir / MINI / "vizgen_transcripts.gz", root)
    for name in (TRANSFORM, "mini_dataset_dapi_z0.jpg"):
        shutil.copy(data_dir / MINI / "images" / name, root / "images")
    return root


def test_bundled_crop_is_aligned(crop: Path) -> None:
    sample = read_merfish(crop, z_planes=[0])
    report = sample.metadata["alignment"]
    assert report["likely"] is None and report["correlation"]["as_given"] > 0.6
    assert report["image_covered"] > 0.7


def test_transform_at_half_scale_is_refused(
    crop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = crop / "images" / TRANSFORM
    m = np.loadtxt(path)
    m[:2] /= 2  # every molecule still lands in the image, in its top-left quarter
    np.savetxt(path, m)
    with pytest.raises(GeometryError, match=r"r = 0\.\d\d at twice the scale of the transform, "
                       r"but at r = -?0\.\d\d as given \(100% of molecules inside"):  # fmt: skip
        read_merfish(crop, z_planes=[0])
    out = tmp_path / "store"
    assert main(["prepare", "--input", str(crop), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "likely cause: check the µm → px transform" in err and str(path) in err
    assert not out.exists()


def test_exchanged_columns_are_named(crop: Path) -> None:
    gz = crop / "vizgen_transcripts.gz"
    lines = gzip.decompress(gz.read_bytes()).decode().splitlines()
    lines[0] = "global_y,global_x,gene,global_z"
    gz.write_bytes(gzip.compress("\n".join(lines).encode() + b"\n"))
    expected = (
        "with the x and y columns exchanged, but as given no molecule falls inside the image; "
        "likely cause: exchange the x and y"
    )
    with pytest.raises(GeometryError, match=expected):
        read_merfish(crop, z_planes=[0])


def test_transposed_image_is_named(crop: Path) -> None:
    jpg = crop / "images" / "mini_dataset_dapi_z0.jpg"
    Image.open(jpg).transpose(Image.Transpose.TRANSPOSE).save(jpg, quality=95)
    with pytest.raises(GeometryError, match=r"rows and columns exchanged \(a transposed image\)"):
        read_merfish(crop, z_planes=[0])


def _grid(xy: np.ndarray, shape_hw: tuple[int, int]) -> AlignmentGrid:
    grid = AlignmentGrid(shape_hw, AffineTransform.from_pixel_size(1.0), blocks=16)
    grid.add(xy)
    return grid


def test_image_that_does_not_show_the_tissue_passes() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [200, 100], (5000, 2))
    noise = rng.uniform(0, 255, (100, 200, 1))
    grid = _grid(xy, (100, 200))
    report = assess_alignment(grid, image_signal(noise, "fluorescence", grid))
    assert report.likely is None
    check_alignment(report, file="t.csv", fields="x/y", image="i.tif")


def test_exchange_is_named_by_extent_alone() -> None:
    """No correlation to go by: only the exchanged reading puts every molecule inside."""
    rng = np.random.default_rng(1)
    xy = rng.uniform(
        0, [100, 200], (5000, 2)
    )  # x up to 100, y up to 200: fits H×W = 100×200 swapped
    noise = rng.uniform(0, 255, (100, 200, 1))
    grid = _grid(xy, (100, 200))
    report = assess_alignment(grid, image_signal(noise, "fluorescence", grid))
    assert (report.likely, report.reason) == ("xy_exchanged", "extent")
    with pytest.raises(GeometryError, match="fall outside the image as given, 0% with the x and y"):
        check_alignment(report, file="t.csv", fields="x/y", image="i.tif")


def test_section_covering_little_of_its_image_is_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = np.random.default_rng(2)
    image = np.zeros((200, 200, 1))
    image[:50, :50] = rng.uniform(100, 255, (50, 50, 1))  # tissue in one corner
    xy = rng.uniform(0, 50, (5000, 2))
    grid = _grid(xy, (200, 200))
    report = assess_alignment(grid, image_signal(image, "fluorescence", grid))
    assert report.likely is None
    with caplog.at_level(logging.WARNING, logger="diffst.io"):
        warn_doubtful(report, file="t.csv", image="i.tif")
    assert "molecules cover only 6% of the image i.tif" in caplog.text


def test_somewhat_better_alternative_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    corr = {"as_given": 0.65, "xy_exchanged": 0.88}
    report = AlignmentReport(corr, {"as_given": 1.0, "xy_exchanged": 1.0}, 0.9, None, "",
                             doubtful="xy_exchanged")  # fmt: skip
    check_alignment(report, file="t.parquet", fields="x/y", image="i.tif")  # no error
    with caplog.at_level(logging.WARNING, logger="diffst.io"):
        warn_doubtful(report, file="t.parquet", image="i.tif")
    assert "with the x and y columns exchanged somewhat better (Spearman r = 0.88) than as " in (
        caplog.text
    )
    assert "(a fix would be: exchange the x and y columns of the table)" in caplog.text


@pytest.mark.parametrize(("noise", "likely", "doubtful"), [(4.0, None, "xy_exchanged"),
                                                          (9.0, "xy_exchanged", None),
                                                          (0.0, None, None)])  # fmt: skip
def test_gain_over_the_given_reading_decides(
    noise: float, likely: str | None, doubtful: str | None
) -> None:
    """Counts that follow the signal less closely as given than exchanged."""
    rng = np.random.default_rng(4)
    grid = AlignmentGrid((160, 160), AffineTransform.from_pixel_size(1.0), blocks=16)
    signal = rng.uniform(0, 1, grid.grid)
    for name in grid.counts:
        grid.counts[name] = rng.poisson(5, signal.size)  # unrelated readings
        grid.inside[name] = 100
    grid.n = 100
    grid.counts["xy_exchanged"] = np.rint(100 * signal.ravel() + rng.normal(0, 5, signal.size))
    grid.counts["as_given"] = np.rint(100 * signal.ravel() + rng.normal(0, 5 + 5 * noise, 256))
    report = assess_alignment(grid, signal)
    assert (report.likely, report.doubtful) == (likely, doubtful), report.correlation
