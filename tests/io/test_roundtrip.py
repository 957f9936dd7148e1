"""Synthetic sample → platform-format files → reader: counts, geometry and filters survive."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from diffst.geometry import GeometryError
from diffst.io import (
    InputError,
    detect_platform,
    read_legacy_st,
    read_sample,
    read_visium_hd,
    read_xenium,
)
from diffst.io.sample import SpatialSample
from diffst.io.writers import HE_ALIGNMENT_FILE, HE_FILE
from diffst.synthetic import (
    simulate_tissue,
    write_legacy_st,
    write_spaceranger_outs,
    write_visium_hd_outs,
    write_xenium_outs,
)


@pytest.fixture(scope="module")
def small() -> SpatialSample:
    return simulate_tissue(width_um=160, height_um=120, n_genes=12, n_cell_types=3, seed=3)


@pytest.fixture(scope="module")
def wide() -> SpatialSample:
    return simulate_tissue(
        width_um=500, height_um=400, n_genes=10, n_cell_types=3, um_per_px=1.0, seed=4
    )


def _molecules(sample: SpatialSample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chunks = list(sample.transcripts.iter_chunks())
    return tuple(np.concatenate([getattr(c, f) for c in chunks]) for f in ("x_um", "y_um", "gene"))


def _real(sample: SpatialSample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, g = _molecules(sample)
    keep = ~sample.control[g]
    return x[keep], y[keep], np.array(sample.genes)[g[keep]]


def _brute_counts(sample: SpatialSample, centers: np.ndarray, radius: float, genes) -> np.ndarray:
    x, y, names = _real(sample)
    d = np.hypot(x[None] - centers[:, :1], y[None] - centers[:, 1:])
    inside = d <= radius
    return np.stack([(inside & (names == g)[None]).sum(axis=1) for g in genes], axis=1)


@pytest.fixture(scope="module")
def xenium_dir(small: SpatialSample, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_xenium_outs(small, tmp_path_factory.mktemp("xenium"), he=True, row_group_size=1000)


def test_xenium_roundtrip(small: SpatialSample, xenium_dir: Path) -> None:
    n_groups = pq.ParquetFile(xenium_dir / "transcripts.parquet").num_row_groups
    assert n_groups > 1
    s = read_xenium(xenium_dir)
    assert len(list(s.transcripts.iter_chunks())) == n_groups  # one chunk per row group
    x0, y0, n0 = _real(small)
    x1, y1, g1 = _molecules(s)
    assert s.metadata["n_transcripts"] == len(x0) == len(x1)
    assert not s.control.any()
    key0 = np.lexsort((y0, x0))
    key1 = np.lexsort((y1, x1))
    np.testing.assert_allclose(x1[key1], x0[key0], atol=1e-3)
    assert np.array_equal(np.array(s.genes)[g1[key1]], n0[key0])
    img = s.image
    assert img is not None and img.shape_hw == small.image.shape_hw
    assert img.um_per_px == pytest.approx(0.5)
    px = np.floor(img.um_to_px.apply(np.c_[x1, y1][:50])).astype(int)
    rgb = np.asarray(small.image.pixels)[px[:, 1], px[:, 0]].astype(float)
    expected = ((255 - rgb.mean(axis=1)) * 257).astype(np.uint16)
    assert np.array_equal(np.asarray(img.pixels[:, :, 0])[px[:, 1], px[:, 0]], expected)


def test_xenium_filters(small: SpatialSample, xenium_dir: Path) -> None:
    strict = read_xenium(xenium_dir, image=None)
    loose = read_xenium(xenium_dir, image=None, min_qv=0.0)
    table = pq.read_table(xenium_dir / "transcripts.parquet").to_pandas()
    real = ~table["feature_name"].str.match("NegControl|Unassigned")
    assert int(((table["qv"] < 20) & real).sum()) > 0.05 * len(table)
    assert strict.metadata["n_transcripts"] == int(((table["qv"] >= 20) & real).sum())
    assert loose.metadata["n_transcripts"] == int(real.sum())
    ctrl = read_xenium(xenium_dir, image=None, keep_controls=True)
    flagged = {g for g, c in zip(ctrl.genes, ctrl.control, strict=True) if c}
    assert {
        "NegControlCodeword_0500",
        "UnassignedCodeword_0001",
        "NegControlProbe_00000",
    } <= flagged


def test_xenium_registered_he(small: SpatialSample, xenium_dir: Path) -> None:
    s = read_xenium(
        xenium_dir, image=xenium_dir / HE_FILE, alignment=xenium_dir / HE_ALIGNMENT_FILE
    )
    x, y, _ = _molecules(s)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(x), 300, replace=False)
    pts = np.c_[x[pick], y[pick]]
    he = np.floor(s.image.um_to_px.apply(pts))
    # the writer filled each H&E pixel from the source pixel under the pixel's centre
    centre_um = s.image.um_to_px.inverse().apply(he + 0.5)
    ref = np.floor(small.image.um_to_px.apply(centre_um)).astype(int)
    he = he.astype(int)
    a = np.asarray(s.image.pixels)[he[:, 1], he[:, 0]]
    b = np.asarray(small.image.pixels)[ref[:, 1], ref[:, 0]]
    assert np.mean(np.all(a == b, axis=1)) > 0.98
    assert s.image.um_per_px == pytest.approx(0.75)  # 1.5 × the morphology pixel


def test_xenium_bad_files(xenium_dir: Path, tmp_path: Path) -> None:
    table = pq.read_table(xenium_dir / "transcripts.parquet")
    (tmp_path / "empty").mkdir()
    pq.write_table(table.slice(0, 0), tmp_path / "empty" / "transcripts.parquet")
    with pytest.raises(InputError, match=r"transcripts\.parquet.*no rows"):
        read_xenium(tmp_path / "empty", image=None)
    (tmp_path / "cols").mkdir()
    pq.write_table(table.drop(["qv", "x_location"]), tmp_path / "cols" / "transcripts.parquet")
    with pytest.raises(InputError, match=r"missing required column\(s\) \['x_location', 'qv'\]"):
        read_xenium(tmp_path / "cols", image=None)
    (tmp_path / "cut").mkdir()
    raw = (xenium_dir / "transcripts.parquet").read_bytes()
    (tmp_path / "cut" / "transcripts.parquet").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"transcripts\.parquet.*parquet"):
        read_xenium(tmp_path / "cut", image=None)
    with pytest.raises(InputError, match="alignment CSV"):
        read_xenium(xenium_dir, image=xenium_dir / HE_FILE)


def test_xenium_csv_gz(small: SpatialSample, xenium_dir: Path, tmp_path: Path) -> None:
    frame = pq.read_table(xenium_dir / "transcripts.parquet").to_pandas()
    frame.to_csv(tmp_path / "transcripts.csv.gz", index=False)
    s = read_xenium(tmp_path, image=None, chunk_rows=1000)
    assert s.metadata["n_transcripts"] == len(_real(small)[0])
    assert sum(len(c) for c in s.transcripts.iter_chunks()) == s.metadata["n_transcripts"]
    assert detect_platform(tmp_path) == "xenium"


@pytest.mark.parametrize("layout", ["list", "header"])
def test_spaceranger_roundtrip(wide: SpatialSample, tmp_path: Path, layout: str) -> None:
    out = write_spaceranger_outs(wide, tmp_path / "outs", layout=layout)
    s = read_sample(out, image="hires")
    assert s.platform == "visium"
    sp = s.spots
    assert sp.lattice == "hex" and sp.pitch_um == pytest.approx(100.0, abs=1.0)
    assert s.metadata["um_per_px_fullres"] == pytest.approx(1.0)
    assert s.image.shape_hw == (200, 250)
    brute = _brute_counts(wide, sp.centers_um, 27.5, sp.genes)
    assert np.array_equal(sp.counts.toarray(), brute)
    assert sp.counts.sum() > 0 and np.all(np.asarray(sp.counts.sum(axis=1)) > 0)


def test_visium_hd_roundtrip(wide: SpatialSample, tmp_path: Path) -> None:
    out = write_visium_hd_outs(wide, tmp_path / "hd", bin_um=8)
    assert detect_platform(out) == "visium_hd"
    s = read_visium_hd(out, bin_um=8, image="lowres")
    sp = s.spots
    assert sp.shape == "square" and sp.diameter_um == 8.0 and sp.lattice == "square"
    x, y, names = _real(wide)
    totals = {g: int(np.sum(names == g)) for g in sp.genes}
    assert (
        dict(zip(sp.genes, np.asarray(sp.counts.sum(axis=0)).ravel().tolist(), strict=True))
        == totals
    )
    j, i = np.floor(x[0] / 8), np.floor(y[0] / 8)
    hit = np.flatnonzero(np.all(sp.centers_um == [(j + 0.5) * 8, (i + 0.5) * 8], axis=1))
    assert len(hit) == 1
    with pytest.raises(InputError, match=r"square_016um.*square_008um"):
        read_visium_hd(out, bin_um=16)
    sf = out / "binned_outputs/square_008um/spatial/scalefactors_json.json"
    values = json.loads(sf.read_text()) | {"microns_per_pixel": 0.8}
    sf.write_text(json.dumps(values))
    with pytest.raises(GeometryError, match=r"microns_per_pixel = 0\.8 .*disagrees"):
        read_visium_hd(out, bin_um=8)


def test_legacy_st_roundtrip(wide: SpatialSample, tmp_path: Path) -> None:
    files = write_legacy_st(wide, tmp_path, pitch_um=100.0, spot_um=50.0)
    s = read_sample(tmp_path, pitch_um=100.0, spot_diameter_um=50.0)
    assert s.platform == "legacy_st"
    sp = s.spots
    assert sp.lattice == "square" and sp.array_coords is not None
    assert s.metadata["um_per_px"] == pytest.approx(1.0, rel=1e-3)
    brute = _brute_counts(wide, sp.centers_um, 25.0, sp.genes)
    assert np.array_equal(sp.counts.toarray(), brute)
    table = files[1].read_text().splitlines()
    assert table[0].split("\t") == ["x", "y", "new_x", "new_y", "pixel_x", "pixel_y", "selected"]
    assert len(table) - 1 >= sp.n_spots
    with pytest.raises(GeometryError, match=r"pitch_um = 100\.0 µm disagrees"):
        read_legacy_st(*files, pitch_um=100.0, um_per_px=1.5)


def test_xenium_pixel_size_disagreement(xenium_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "x"
    shutil.copytree(xenium_dir, copy)
    (copy / "experiment.xenium").write_text(json.dumps({"pixel_size": 0.2125}))
    with pytest.raises(GeometryError, match=r"experiment\.xenium: field pixel_size = 0\.2125"):
        read_xenium(copy)
