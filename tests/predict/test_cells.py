"""Per-cell output: bin-area weights from polygons, label images and GeoJSON; aggregation of the
prediction; the CLI on the bundled MERFISH crop with its real cell polygons."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffst.geometry import AffineTransform
from diffst.inference.cells import (
    CellShapes,
    cell_weights,
    cells_anndata,
    read_cells,
)
from diffst.io.sample import InputError

HR = 10.0
# a 4 × 4 grid of 10 µm bins with its corner at (0, 0) µm
CENTRES = np.array([[5.0 + 10 * c, 5.0 + 10 * r] for r in range(4) for c in range(4)])
# a cell covering bins (0, 0), (0, 1) whole and half of bins (0, 2) and (1, 0), (1, 1), (1, 2)
SQUARE = np.array([[0.0, 0.0], [25.0, 0.0], [25.0, 15.0], [0.0, 15.0]])
PX_PER_UM = 2.0  # image pixels per µm
FRAME = AffineTransform.from_pixel_size(1 / PX_PER_UM)


def _expected() -> np.ndarray:
    w = np.zeros((4, 4))
    w[0, :2], w[0, 2] = 1.0, 0.5
    w[1, :2], w[1, 2] = 0.5, 0.25
    return w.ravel()


def test_polygon_weights_are_the_covered_share_of_each_bin() -> None:
    cells = CellShapes(["a"], Path("x"), polygons_um=[SQUARE])
    np.testing.assert_allclose(cell_weights(cells, CENTRES, HR).toarray()[0], _expected())


def test_label_image_and_geojson_give_the_same_weights(tmp_path: Path) -> None:
    labels = np.zeros((80, 80), np.uint16)
    labels[: int(15 * PX_PER_UM), : int(25 * PX_PER_UM)] = 7
    Image.fromarray(labels).save(tmp_path / "labels.png")
    from_labels = read_cells(tmp_path / "labels.png", FRAME)
    assert from_labels.ids == ["7"]
    np.testing.assert_allclose(cell_weights(from_labels, CENTRES, HR).toarray()[0], _expected())
    ring = (SQUARE * PX_PER_UM).tolist()
    geo = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "c1", "properties": {},
         "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}},
    ]}  # fmt: skip
    (tmp_path / "cells.geojson").write_text(json.dumps(geo))
    from_geojson = read_cells(tmp_path / "cells.geojson", FRAME)
    assert from_geojson.ids == ["c1"]
    np.testing.assert_allclose(cell_weights(from_geojson, CENTRES, HR).toarray()[0], _expected())


def _prediction() -> ad.AnnData:
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, size=(16, 3)).astype(np.float32)
    pred = ad.AnnData(
        X=x,
        obs=pd.DataFrame(
            {"x_um": CENTRES[:, 0], "y_um": CENTRES[:, 1]}, index=[f"b{k}" for k in range(16)]
        ),
        var=pd.DataFrame(index=["A", "B", "C"]),
    )  # fmt: skip
    pred.layers["std"] = np.full_like(x, 0.5)
    pred.obsm["spatial"] = CENTRES * PX_PER_UM
    pred.uns["diffst"] = {"geometry": {"hr_um": HR}, "checkpoint": "ckpt.pt"}
    return pred


def test_cells_integrate_the_prediction_and_tile_it_exactly() -> None:
    pred = _prediction()
    quarters = [  # four 20 × 20 µm cells that tile the grid
        np.array([[x, y], [x + 20, y], [x + 20, y + 20], [x, y + 20]], float)
        for y in (0.0, 20.0) for x in (0.0, 20.0)
    ]  # fmt: skip
    cells = CellShapes(["q0", "q1", "q2", "q3"], Path("x"), polygons_um=quarters)
    out = cells_anndata(pred, cells)
    np.testing.assert_allclose(out.X.sum(axis=0), pred.X.sum(axis=0), rtol=1e-5)
    np.testing.assert_allclose(out.layers["std"], np.sqrt(4 * 0.25), rtol=1e-6)  # 4 bins × 0.5²
    np.testing.assert_allclose(out.obs["area_um2"], 400.0)
    np.testing.assert_allclose(out.obs[["x_um", "y_um"]].to_numpy()[0], [10.0, 10.0])
    np.testing.assert_allclose(out.obsm["spatial"][0], [20.0, 20.0])  # µm × 2 px/µm
    assert (out.layers["q05"] <= out.X).all() and (out.layers["q95"] >= out.X).all()
    assert list(out.obs["cell_id"]) == ["q0", "q1", "q2", "q3"]


def test_cells_of_a_prediction_with_chosen_genes_statistics() -> None:
    """With sample statistics for some genes only (obsm['std']), the other genes' cell std and
    interval are NaN, not zero."""
    full = _prediction()
    pred = full.copy()
    pred.obsm["std"] = pd.DataFrame(full.layers["std"][:, [1]], index=pred.obs_names, columns=["B"])
    del pred.layers["std"]
    quarters = [
        np.array([[x, y], [x + 20, y], [x + 20, y + 20], [x, y + 20]], float)
        for y in (0.0, 20.0) for x in (0.0, 20.0)
    ]  # fmt: skip
    cells = CellShapes(["q0", "q1", "q2", "q3"], Path("x"), polygons_um=quarters)
    ref, out = cells_anndata(full, cells), cells_anndata(pred, cells)
    np.testing.assert_array_equal(out.X, ref.X)
    np.testing.assert_allclose(out.layers["std"][:, 1], ref.layers["std"][:, 1])
    assert np.isnan(out.layers["std"][:, [0, 2]]).all()
    assert np.isnan(out.layers["q95"][:, 0]).all()


def test_cells_mostly_off_the_prediction_are_left_out_or_refused() -> None:
    pred = _prediction()
    far = np.array([[30.0, 30.0], [60.0, 30.0], [60.0, 60.0], [30.0, 60.0]])  # 1/9 on the grid
    cells = CellShapes(["in", "far"], Path("cells.csv"), polygons_um=[SQUARE, far])
    assert list(cells_anndata(pred, cells).obs["cell_id"]) == ["in"]
    with pytest.raises(InputError, match=r"cells\.csv: no cell has 50% of its area"):
        cells_anndata(pred, CellShapes(["far"], Path("cells.csv"), polygons_um=[far]))


def test_bad_cell_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_cells(tmp_path / "none.parquet", None)
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(InputError, match="unknown cell boundary format"):
        read_cells(tmp_path / "c.txt", None)
    pd.DataFrame({"id": [1], "x": [0.0], "y": [0.0]}).to_csv(tmp_path / "v.csv", index=False)
    with pytest.raises(InputError, match="no cell id column"):
        read_cells(tmp_path / "v.csv", None)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(InputError, match="holds no cell"):
        read_cells(tmp_path / "empty.png", FRAME)
    with pytest.raises(InputError, match="no image to place them"):
        read_cells(tmp_path / "empty.png", None)


def _bundled_polygons(tmp_path: Path) -> Path:
    """The crop's real MERFISH cell polygons (GiottoData stores them with y negated) as a
    Xenium-style vertex table in the section's µm frame."""
    from diffst.datasets import MERFISH_DIR, _dataset_dir

    src = _dataset_dir(MERFISH_DIR) / "cell_boundaries" / "z0_polygons.gz"
    with gzip.open(src, "rt") as fh:
        table = pd.read_csv(fh)
    out = pd.DataFrame(
        {"cell_id": table["poly_ID"].astype(str), "vertex_x": table["x"], "vertex_y": -table["y"]}
    )
    path = tmp_path / "cell_boundaries.parquet"
    out.to_parquet(path)
    return path


def test_predict_cli_writes_cells_for_the_bundled_crop(
    make_checkpoint, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from diffst.cli import main

    genes = ["Slc17a7", "Gfap", "Gabbr1", "Cx3cl1"]
    ckpt = make_checkpoint(genes, lr="grid", channels=2, hr_um=HR)
    boundaries = _bundled_polygons(tmp_path)
    n_source = len(read_cells(boundaries, None).ids)
    out = tmp_path / "pred.h5ad"
    code = main([
        "predict", "--checkpoint", str(ckpt), "--input", "merfish_mini", "--out", str(out),
        "--image-channels", "DAPI", "polyT", "--steps", "1", "--samples", "2", "--device", "cpu",
        "--no-progress", "--cells", str(boundaries),
    ])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    cells = ad.read_h5ad(tmp_path / "pred.cells.h5ad")
    bins = ad.read_h5ad(out)
    assert 0 < cells.n_obs <= n_source and list(cells.var_names) == genes
    assert f"of {n_source} cells" in printed.out
    assert (cells.obs["covered_fraction"] >= 0.5).all()
    # a cell's counts never exceed the counts of the bins it touches
    assert cells.X.sum() <= bins.X.sum() * (1 + 1e-5)
    assert "spatial" in cells.uns and cells.obsm["spatial"].shape == (cells.n_obs, 2)
    # scanpy's usual clustering runs on the file as written, with no glue
    sc = pytest.importorskip("scanpy")
    sc.pp.normalize_total(cells)
    sc.pp.log1p(cells)
    sc.pp.pca(cells, n_comps=len(genes) - 1)
    sc.pp.neighbors(cells, n_neighbors=10)
    sc.tl.leiden(cells, flavor="igraph", n_iterations=2, directed=False, random_state=0)
    assert cells.obs["leiden"].nunique() >= 2
    # the output exists now: a second run refuses before any compute
    again = main([
        "predict", "--checkpoint", str(ckpt), "--input", "merfish_mini", "--out",
        str(tmp_path / "other.h5ad"), "--cells", str(boundaries), "--cells-out",
        str(tmp_path / "pred.cells.h5ad"), "--steps", "1", "--samples", "2", "--device", "cpu",
        "--image-channels", "DAPI", "polyT",
    ])  # fmt: skip
    assert again == 2 and "exists" in capsys.readouterr().err
    assert not (tmp_path / "other.h5ad").exists()


def test_label_weights_do_not_depend_on_the_block_of_bins(tmp_path: Path) -> None:
    from diffst.inference.cells import _label_weights

    labels = np.zeros((80, 80), np.uint16)
    labels[:30, :50], labels[40:, 10:70] = 3, 9
    Image.fromarray(labels).save(tmp_path / "labels.png")
    cells = read_cells(tmp_path / "labels.png", FRAME)
    whole = _label_weights(cells, CENTRES, HR, 4)
    pieces = _label_weights(cells, CENTRES, HR, 4, block=5)
    np.testing.assert_allclose(whole.toarray(), pieces.toarray())
    assert whole.shape == (2, 16) and whole.sum() > 0
