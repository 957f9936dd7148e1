"""MERFISH reader on the bundled GiottoData Vizgen mini region (numbers from data/README.md)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from diffst.datasets import merfish_mini
from diffst.geometry import GeometryError
from diffst.io import InputError, read_merfish
from diffst.io.sample import SpatialSample


@pytest.fixture(scope="module")
def sample() -> SpatialSample:
    return merfish_mini(z_planes=(0, 1), image="both")


def _all(sample: SpatialSample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chunks = list(sample.transcripts.iter_chunks())
    return tuple(np.concatenate([getattr(c, f) for c in chunks]) for f in ("x_um", "y_um", "gene"))


def test_counts_and_genes(sample: SpatialSample) -> None:
    x, _, gene = _all(sample)
    assert len(x) == 80_343 == sample.metadata["n_transcripts"]
    assert len(sample.genes) == 559
    assert int(sample.control.sum()) == 109
    assert all(g.startswith("Blank-") for g in np.array(sample.genes)[sample.control])
    names = np.array(sample.genes)[gene]
    assert int(np.sum(names == "Slc17a7")) == 5_150
    assert int(np.sum(names == "Gfap")) == 4_976
    assert int(sample.control[gene].sum()) == 337


def test_image_geometry(sample: SpatialSample) -> None:
    img = sample.image
    assert img is not None
    assert img.shape_hw == (4143, 4603)
    assert img.channels == ("DAPI", "polyT")
    assert img.pixels.shape == (4143, 4603, 2)
    assert img.um_per_px == pytest.approx(0.108627, abs=1e-6)
    x, y, _ = _all(sample)
    px = img.um_to_px.apply(np.c_[x, y])
    assert px[:, 0].min() > 0 and px[:, 0].max() < 4603
    assert px[:, 1].min() > 0 and px[:, 1].max() < 4143
    # README: col = (global_x − 6400.029) / 0.10862654790354112
    assert px[0, 0] == pytest.approx((x[0] - 6400.029) / 0.10862654790354112, abs=1e-3)


def test_z_plane_selection(data_dir: Path) -> None:
    s = read_merfish(data_dir / "giotto_vizgen_mini", z_planes=[0], image=None, chunk_rows=10_000)
    assert s.metadata["n_transcripts"] == 36_197
    sizes = [len(c) for c in s.transcripts.iter_chunks()]  # streamed: 9 file chunks of 10,000 rows
    assert len(sizes) == 9 and sum(sizes) == 36_197 and max(sizes) <= 10_000
    assert len(s.genes) == 502
    assert s.image is None
    with pytest.raises(InputError, match="global_z"):
        read_merfish(data_dir / "giotto_vizgen_mini", z_planes=[5], image=None)


def _copy_layout(src: Path, dst: Path, transcripts: bytes | None = None) -> Path:
    (dst / "images").mkdir(parents=True)
    for p in (src / "images").glob("mini_dataset_dapi_z0.jpg"):
        (dst / "images" / p.name).symlink_to(p)
    (dst / "images" / "micron_to_pixel_transform.csv").write_bytes(
        (src / "images" / "micron_to_pixel_transform.csv").read_bytes()
    )
    raw = (src / "vizgen_transcripts.gz").read_bytes()
    (dst / "vizgen_transcripts.gz").write_bytes(raw if transcripts is None else transcripts)
    return dst


def test_wrong_transform_is_outside_image(data_dir: Path, tmp_path: Path) -> None:
    root = _copy_layout(data_dir / "giotto_vizgen_mini", tmp_path / "m")
    m = np.loadtxt(root / "images" / "micron_to_pixel_transform.csv")
    m[:2, :2] *= 2.0  # pretend 0.054 µm/px
    np.savetxt(root / "images" / "micron_to_pixel_transform.csv", m)
    with pytest.raises(GeometryError, match=r"vizgen_transcripts\.gz.*global_x/global_y.*past"):
        read_merfish(root, image="dapi")


def test_truncated_gzip(data_dir: Path, tmp_path: Path) -> None:
    raw = (data_dir / "giotto_vizgen_mini" / "vizgen_transcripts.gz").read_bytes()
    root = _copy_layout(data_dir / "giotto_vizgen_mini", tmp_path / "m", raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"vizgen_transcripts\.gz.*truncated"):
        read_merfish(root, image=None)


def test_missing_column_and_empty(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    (root / "detected_transcripts.csv").write_text("global_x,global_y,gene\n1,2,A\n")
    with pytest.raises(InputError, match=r"detected_transcripts\.csv.*\['global_z'\]"):
        read_merfish(root, image=None)
    (root / "detected_transcripts.csv").write_text("")
    with pytest.raises(InputError, match="empty file"):
        read_merfish(root, image=None)
    (root / "detected_transcripts.csv").unlink()
    with gzip.open(root / "vizgen_transcripts.gz", "wt") as fh:
        fh.write("global_x,global_y,gene,global_z\n")
    with pytest.raises(InputError, match="no rows"):
        read_merfish(root, image=None)


def test_missing_image(data_dir: Path, tmp_path: Path) -> None:
    root = _copy_layout(data_dir / "giotto_vizgen_mini", tmp_path / "m")
    with pytest.raises(InputError, match="polyT mosaic image for z-plane 0"):
        read_merfish(root, image="polyt")


def test_standard_vizgen_layout_lazy_tiff(tmp_path: Path) -> None:
    from diffst.io.images import ChannelLast
    from diffst.synthetic import simulate_tissue

    t = simulate_tissue(width_um=80, height_um=60, n_genes=5, image_kind="fluorescence", seed=5)
    chunk = next(t.transcripts.iter_chunks())
    n = len(chunk)
    frame = pd.DataFrame(
        {
            "barcode_id": chunk.gene,
            "global_x": chunk.x_um,
            "global_y": chunk.y_um,
            "global_z": np.arange(n) % 3,
            "x": 0.0,
            "y": 0.0,
            "fov": 0,
            "gene": np.array(t.genes)[chunk.gene],
            "transcript_id": [f"t{i}" for i in range(n)],
        }
    )
    frame.to_csv(tmp_path / "detected_transcripts.csv")  # Vizgen writes an unnamed index
    (tmp_path / "images").mkdir()
    np.savetxt(
        tmp_path / "images" / "micron_to_mosaic_pixel_transform.csv", t.image.um_to_px.matrix
    )
    pixels = np.asarray(t.image.pixels)
    for c, name in enumerate(("DAPI", "PolyT")):
        for z in range(3):
            tifffile.imwrite(tmp_path / "images" / f"mosaic_{name}_z{z}.tif", pixels[:, :, c])
    s = read_merfish(tmp_path, z_planes=(1, 2), image="polyt", image_z=2)
    assert s.metadata["n_transcripts"] == int(np.sum(np.arange(n) % 3 > 0))
    assert isinstance(s.image.pixels, ChannelLast)  # memory-mapped, not decoded
    assert np.array_equal(np.asarray(s.image.pixels)[:, :, 0], pixels[:, :, 1])
    assert s.source_files["image"].name == "mosaic_PolyT_z2.tif"
    assert int(s.control.sum()) == 2  # NegControlProbe_* of the simulation
