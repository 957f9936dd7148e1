"""CosMx reader on the bundled GiottoData Lung12 crops (numbers from data/README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffst.datasets import COSMX_ASSUMED_UM_PER_PX, cosmx_mini
from diffst.geometry import GeometryError
from diffst.io import InputError, read_cosmx
from diffst.io.cosmx import read_cosmx_labels

S = COSMX_ASSUMED_UM_PER_PX


@pytest.fixture(scope="module")
def table(data_dir: Path) -> pd.DataFrame:
    return pd.read_csv(data_dir / "giotto_cosmx_mini" / "Lung12_tx_file.csv")


def test_pixel_size_is_required(data_dir: Path) -> None:
    with pytest.raises(InputError, match=r"not stated.*um_per_px"):
        read_cosmx(data_dir / "giotto_cosmx_mini")


def test_counts_genes_and_assumption_recorded() -> None:
    s = cosmx_mini()
    assert s.metadata["n_transcripts"] == 25_825
    assert sum(len(c) for c in s.transcripts.iter_chunks()) == 25_825
    assert len(s.genes) == 980 and int(s.control.sum()) == 20
    assert all(g.startswith("NegPrb") for g in np.array(s.genes)[s.control])
    assert "assumed" in str(s.metadata["um_per_px_source"])
    assert s.image is not None and s.image.shape_hw == (648, 1344)
    assert s.image.um_per_px == pytest.approx(S)


@pytest.mark.parametrize(("fov", "n_rows"), [(2, 12_542), (3, 13_283)])
def test_flip_puts_transcripts_on_their_cells(
    data_dir: Path, table: pd.DataFrame, fov: int, n_rows: int
) -> None:
    root = data_dir / "giotto_cosmx_mini"
    s = read_cosmx(root, um_per_px=S, fovs=[fov])
    labels, tf = read_cosmx_labels(root, um_per_px=S, fovs=[fov])
    assert np.allclose(tf.matrix, s.image.um_to_px.matrix)
    chunks = list(s.transcripts.iter_chunks())
    x = np.concatenate([c.x_um for c in chunks])
    y = np.concatenate([c.y_um for c in chunks])
    assert len(x) == n_rows
    px = np.floor(s.image.um_to_px.apply(np.c_[x, y])).astype(int)
    assert px.min() >= 0 and px[:, 0].max() < 672 and px[:, 1].max() < 648
    cell = table.loc[table.fov == fov, "cell_ID"].to_numpy()
    hit = labels[px[:, 1], px[:, 0]]
    assigned = cell > 0
    assert np.mean(hit[assigned] == cell[assigned]) >= 0.98
    assert np.mean(hit[~assigned] == 0) >= 0.98
    # the unflipped reading (row = y_local − 3000) is wrong almost everywhere
    local = table.loc[table.fov == fov, ["x_local_px", "y_local_px"]].to_numpy()
    x0 = 4800 if fov == 2 else 0
    naive = labels[(local[:, 1] - 3000).astype(int).clip(0, 647), (local[:, 0] - x0).astype(int)]
    assert np.mean(naive[assigned] == cell[assigned]) < 0.2


def test_mosaic_places_both_fovs(data_dir: Path) -> None:
    root = data_dir / "giotto_cosmx_mini"
    labels, _ = read_cosmx_labels(root, um_per_px=S)
    f2, _ = read_cosmx_labels(root, um_per_px=S, fovs=[2])
    f3, _ = read_cosmx_labels(root, um_per_px=S, fovs=[3])
    # FOV 3 starts 672.22 px right of FOV 2 → pasted at column 672
    assert np.array_equal(labels[:, :672], f2) and np.array_equal(labels[:, 672:], f3)


def test_bad_fov_and_outside(data_dir: Path, tmp_path: Path, table: pd.DataFrame) -> None:
    with pytest.raises(InputError, match=r"fov_positions_file\.csv.*FOV 7"):
        read_cosmx(data_dir / "giotto_cosmx_mini", um_per_px=S, fovs=[7])
    root = tmp_path / "c"
    (root / "CellComposite").mkdir(parents=True)
    for name in ("CellComposite_F002.jpg", "CellComposite_F002.jpg.aux.xml"):
        (root / "CellComposite" / name).symlink_to(
            data_dir / "giotto_cosmx_mini/CellComposite" / name
        )
    (root / "R_fov_positions_file.csv").write_text("fov,x_global_px,y_global_px\n2,0,0\n")
    bad = table[table.fov == 2].copy()
    bad.loc[bad.index[0], "y_local_px"] = 2000.0  # 1000 px below the crop
    bad.to_csv(root / "R_tx_file.csv", index=False)
    with pytest.raises(GeometryError, match=r"R_tx_file\.csv.*x_local_px/y_local_px \(FOV 2\)"):
        read_cosmx(root, um_per_px=S)
