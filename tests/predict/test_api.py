"""predict() end to end with a tiny checkpoint on the bundled Visium fixture, and its checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import anndata
import numpy as np
import pytest

from diffst.cli import main
from diffst.config import ConfigError
from diffst.datasets import visium_mini
from diffst.inference.api import predict
from diffst.inference.config import PredictConfig
from diffst.inference.spots import aggregate_to_spots, assign_bins_to_spots, spot_membership
from diffst.io.sample import InputError, SpatialSample, SpotTable

# the raw network estimate (the projection onto the spots, on by default, has its own tests)
FAST = PredictConfig(
    steps=1, n_samples=2, batch_size=8, device="cpu", n_figure_genes=0, project_to_spots=False
)


@pytest.fixture(scope="module")
def visium() -> SpatialSample:
    return visium_mini()


@pytest.fixture(scope="module")
def small_visium(visium: SpatialSample) -> SpatialSample:
    """The 25 spots of the fixture nearest to its first spot (few tiles, fast)."""
    t = visium.spots
    assert t is not None
    d = np.hypot(*(t.centers_um - t.centers_um[0]).T)
    keep = np.sort(np.argsort(d)[:25])
    spots = SpotTable(
        counts=t.counts[keep],
        genes=t.genes,
        centers_um=t.centers_um[keep],
        diameter_um=t.diameter_um,
        shape=t.shape,
        ids=tuple(t.ids[k] for k in keep),
        array_coords=t.array_coords[keep],
        lattice=t.lattice,
        pitch_um=t.pitch_um,
        gene_ids=t.gene_ids,
        control=t.control,
        path=t.path,
    )
    return SpatialSample(
        "small",
        visium.platform,
        image=visium.image,
        spots=spots,
        source_files=visium.source_files,
        metadata=visium.metadata,
    )


@pytest.fixture(scope="module")
def ckpt(make_checkpoint: Callable[..., Path], visium: SpatialSample) -> Path:
    assert visium.spots is not None
    return make_checkpoint(list(visium.spots.gene_ids))


def test_predict_writes_documented_h5ad(
    ckpt: Path, small_visium: SpatialSample, tmp_path: Path
) -> None:
    out = tmp_path / "pred.h5ad"
    adata = predict(ckpt, small_visium, out, FAST, library_id="lib")
    assert adata is not None
    back = anndata.read_h5ad(out)
    np.testing.assert_array_equal(back.X, adata.X)
    assert back.n_vars == 100 and back.var_names[0].startswith("ENSG")
    assert set(back.layers) == {"std", "q05", "q95", "sample_mean"}
    assert np.isfinite(back.X).all() and (back.X >= 0).all()
    # an ε-checkpoint: X is the mean of the samples
    assert back.uns["diffst"]["mean_estimator"] == "samples"
    np.testing.assert_array_equal(back.X, back.layers["sample_mean"])
    # q05/q95 are one tile's quantiles (the most central tile), so they stay ordered
    assert (back.layers["q05"] <= back.layers["q95"] + 1e-6).all()
    meta = back.uns["diffst"]
    assert meta["sampler"] == "ddpm" and meta["steps"] == 1 and meta["n_samples"] == 2
    assert len(meta["checkpoint_sha256"]) == 64 and meta["lr_layout"] == "spots"
    report = meta["spot_consistency"]
    assert report["n_spots"] == 25 and report["n_spots_empty"] == 0
    assert "lib" in back.uns["spatial"] and "hires" in back.uns["spatial"]["lib"]["images"]
    # obsm['spatial'] is full-res px: µm / (µm per full-res px) for Space Ranger's frame
    um_per_px = small_visium.metadata["um_per_px_fullres"]
    np.testing.assert_allclose(
        back.obsm["spatial"], back.obs[["x_um", "y_um"]] / um_per_px, rtol=1e-6
    )


def test_v_checkpoints_predict_the_denoiser_posterior_mean(
    make_checkpoint: Callable[..., Path], visium: SpatialSample, small_visium: SpatialSample,
    tmp_path: Path,
) -> None:  # fmt: skip
    assert visium.spots is not None
    genes = list(visium.spots.gene_ids)
    v_ckpt = make_checkpoint(genes, overrides=("diffusion.prediction=v",))
    auto = predict(v_ckpt, small_visium, tmp_path / "v.h5ad", FAST)
    assert auto is not None and auto.uns["diffst"]["mean_estimator"] == "denoiser"
    # the point estimate is not the samples' mean, which is still written
    assert not np.allclose(auto.X, auto.layers["sample_mean"])
    assert np.isfinite(auto.X).all() and (auto.X >= 0).all()
    samples = predict(
        v_ckpt, small_visium, tmp_path / "s.h5ad", replace(FAST, mean_estimator="samples")
    )
    assert samples is not None and samples.uns["diffst"]["mean_estimator"] == "samples"
    np.testing.assert_array_equal(samples.X, samples.layers["sample_mean"])
    np.testing.assert_allclose(samples.X, auto.layers["sample_mean"], rtol=1e-6, atol=1e-7)
    # an ε-checkpoint cannot give the denoiser estimate: refused before any computation
    eps_ckpt = make_checkpoint(genes)
    out = tmp_path / "e.h5ad"
    with pytest.raises(ConfigError, match=r"mean_estimator.*prediction v or x0"):
        predict(eps_ckpt, small_visium, out, replace(FAST, mean_estimator="denoiser"))
    assert not out.exists()


def test_results_do_not_depend_on_batching(
    ckpt: Path, small_visium: SpatialSample, tmp_path: Path
) -> None:
    a = predict(ckpt, small_visium, tmp_path / "a.h5ad", FAST)
    b = predict(ckpt, small_visium, tmp_path / "b.h5ad", replace(FAST, batch_size=3))
    c = predict(ckpt, small_visium, tmp_path / "c.h5ad", replace(FAST, seed=1))
    auto = predict(ckpt, small_visium, tmp_path / "d.h5ad", replace(FAST, batch_size=0))
    assert a is not None and b is not None and c is not None and auto is not None
    # same seeds per tile; only float32 reduction order differs between batch sizes
    np.testing.assert_allclose(a.X, b.X, rtol=5e-3, atol=1e-3)
    np.testing.assert_allclose(a.X, auto.X, rtol=5e-3, atol=1e-3)
    assert np.abs(a.X - c.X).mean() > 100 * np.abs(a.X - b.X).mean()


def test_tile_batch_size() -> None:
    import torch

    from diffst.inference.tiled import AUTO_BATCH_BYTES, tile_batch_size

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto = PredictConfig(n_samples=8)
    assert auto.batch_size == 0  # the default
    # the demo's network: 32 channels, 10 genes (40 maps wide) on 8 × 8 bins, 8 samples
    assert tile_batch_size(auto, 32, 10, 8, cpu) == AUTO_BATCH_BYTES // (4 * 8 * 40 * 64) == 51
    assert tile_batch_size(auto, 32, 4, 8, cpu) == 64  # the UNet's 32 channels are the widest
    assert tile_batch_size(auto, 32, 2000, 8, cpu) == 1  # a large panel: one tile at a time
    assert tile_batch_size(auto, 128, 25, 256, cpu) == 1  # paper-sized tiles: one at a time
    assert tile_batch_size(auto, 32, 10, 8, cuda) == 4
    assert tile_batch_size(auto, None, 10, 8, cpu) == 4  # e.g. the regression network's tiles
    assert tile_batch_size(replace(auto, batch_size=3), 32, 10, 8, cpu) == 3
    with pytest.raises(ConfigError, match="batch_size"):
        PredictConfig(batch_size=-1)


def test_projection_matches_measured_spot_totals(
    ckpt: Path, small_visium: SpatialSample, tmp_path: Path
) -> None:
    assert PredictConfig().project_to_spots  # the default: X keeps each measured spot's total
    adata = predict(ckpt, small_visium, tmp_path / "p.h5ad", replace(FAST, project_to_spots=True))
    assert adata is not None
    geo = adata.uns["diffst"]["geometry"]
    h, w = (int(v) for v in geo["shape_hr"])
    mean = np.zeros((adata.n_vars, h, w))
    rows, cols = adata.obs["bin_row"].to_numpy(), adata.obs["bin_col"].to_numpy()
    mean[:, rows, cols] = adata.X.T
    tissue = np.zeros((h, w), dtype=bool)
    tissue[rows, cols] = True
    t = small_visium.spots
    assert t is not None
    spot_of_bin = assign_bins_to_spots(
        t.centers_um, t.diameter_um, "circle", tuple(geo["origin_um"]), geo["hr_um"], (h, w), tissue
    )
    sums = aggregate_to_spots(mean, spot_membership(spot_of_bin, t.n_spots))
    np.testing.assert_allclose(sums, t.counts.toarray(), rtol=1e-4, atol=1e-3)
    assert adata.uns["diffst"]["spot_consistency"]["projected"]


def test_missing_genes_are_listed_before_compute(
    make_checkpoint: Callable[..., Path], small_visium: SpatialSample, tmp_path: Path
) -> None:
    assert small_visium.spots is not None
    genes = [*small_visium.spots.gene_ids[:6], "GeneX", "GeneY"]
    ckpt = make_checkpoint(genes)
    with pytest.raises(
        InputError, match=r"lacks 2 of the checkpoint's 8 genes \(25%.*GeneX, GeneY"
    ):
        predict(ckpt, small_visium, tmp_path / "x.h5ad", FAST)
    with pytest.raises(InputError, match="max_missing_genes = 0%"):
        predict(ckpt, small_visium, tmp_path / "x.h5ad", replace(FAST, max_missing_genes=0.0))
    assert list(tmp_path.iterdir()) == []


def test_bad_outputs_and_options_fail_before_compute(
    ckpt: Path, small_visium: SpatialSample, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match="output path is a folder"):
        predict(ckpt, small_visium, tmp_path, FAST)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(InputError, match="is not writable"):
        predict(ckpt, small_visium, tmp_path / "a_file" / "p.h5ad", FAST)
    with pytest.raises(ConfigError, match="spatialdata"):
        predict(ckpt, small_visium, tmp_path / "s.h5ad", replace(FAST, write_spatialdata=True))
    with pytest.raises(ConfigError, match="figure_genes"):
        predict(ckpt, small_visium, tmp_path / "f.h5ad", replace(FAST, figure_genes=("Nope",)))
    no_image = replace(small_visium, image=None)
    t = small_visium.spots
    assert t is not None
    spots_none = replace(
        small_visium,
        spots=replace(
            t,
            counts=t.counts[:0],
            centers_um=t.centers_um[:0],
            ids=(),
            array_coords=t.array_coords[:0],
        ),
    )
    with pytest.raises(InputError, match="field image is missing"):
        predict(ckpt, no_image, tmp_path / "i.h5ad", FAST)
    assert spots_none.spots is not None
    with pytest.raises(InputError, match="field spots is empty"):
        predict(ckpt, spots_none, tmp_path / "e.h5ad", FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_cli_predicts_the_bundled_visium_fixture(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v.h5ad"
    rc = main(
        [
            "predict",
            "--checkpoint",
            str(ckpt),
            "--input",
            "visium_mini",
            "--out",
            str(out),
            "--sampler",
            "ddim",
            "--steps",
            "1",
            "--samples",
            "1",
            "--batch-size",
            "32",
            "--device",
            "cpu",
            "--figures",
            str(tmp_path / "fig"),
            "--figure-genes",
            "ENSG00000188290",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "spot consistency" in printed and "rescaled to the measured spot totals" in printed
    adata = anndata.read_h5ad(out)
    assert adata.uns["diffst"]["spot_consistency"]["n_spots"] == 100
    assert (tmp_path / "fig" / "ENSG00000188290.png").is_file()
    rc = main(
        [
            "predict",
            "--checkpoint",
            str(tmp_path / "none.pt"),
            "--input",
            "visium_mini",
            "--out",
            str(tmp_path / "w.h5ad"),
        ]
    )
    assert rc == 2
    assert "checkpoint file not found" in capsys.readouterr().err


@pytest.mark.cpu_features
@pytest.mark.parametrize("native", [True, False])
def test_bf16_autocast_stays_close_to_fp32(
    native: bool, ckpt: Path, small_visium: SpatialSample, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """bf16 where the device has it (emulated here if this CPU lacks it), exact fp32 elsewhere."""
    import diffst.precision

    a = predict(ckpt, small_visium, tmp_path / "a.h5ad", FAST)
    monkeypatch.setattr(diffst.precision, "native_bf16", lambda device: native)
    b = predict(ckpt, small_visium, tmp_path / "b.h5ad", replace(FAST, precision="bf16"))
    assert a is not None and b is not None
    assert b.uns["diffst"]["config"]["precision"] == "bf16"
    rel = np.abs(a.X - b.X).mean() / np.abs(a.X).mean()
    if native:
        assert 0 < rel < 0.2  # bf16 arithmetic: close to fp32, not equal
    else:
        assert rel == 0  # the fallback computes exactly what fp32 does


def test_config_rejects_bad_values() -> None:
    for bad in ({"steps": 0}, {"n_samples": 0}, {"eta": 2.0}, {"precision": "fp16"},
                {"sampler": "euler"}, {"overlap_bins": -1}):  # fmt: skip
        with pytest.raises(ConfigError, match=next(iter(bad))):
            PredictConfig(**bad)  # type: ignore[arg-type]


def test_cli_parser_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from diffst.cli import build_parser; build_parser();"
        "import diffst.inference; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.cpu_features
@pytest.mark.parametrize("native", [True, False])
def test_bf16_precision_only_where_native(
    native: bool, ckpt: Path, small_visium: SpatialSample, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import diffst.precision

    monkeypatch.setattr(diffst.precision, "native_bf16", lambda device: native)
    adata = predict(ckpt, small_visium, tmp_path / "b.h5ad", replace(FAST, precision="bf16"))
    assert adata is not None and np.isfinite(adata.X).all()
    assert adata.uns["diffst"]["precision_used"] == ("bf16" if native else "fp32")


def test_existing_output_is_replaced_only_with_overwrite(
    ckpt: Path, small_visium: SpatialSample, tmp_path: Path
) -> None:
    out = tmp_path / "pred.h5ad"
    predict(ckpt, small_visium, out, FAST)
    before = out.read_bytes()
    with pytest.raises(ConfigError, match=r"pred.h5ad: output exists; pass --overwrite"):
        predict(ckpt, small_visium, out, replace(FAST, seed=3))
    assert out.read_bytes() == before
    predict(ckpt, small_visium, out, replace(FAST, seed=3), overwrite=True)
    assert out.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.h5ad"]


def test_cli_shows_tile_progress_and_output_paths(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, figures = tmp_path / "v.h5ad", tmp_path / "fig"
    args = ["predict", "--checkpoint", str(ckpt), "--input", "visium_mini", "--out", str(out),
            "--sampler", "ddim", "--steps", "1", "--samples", "1", "--batch-size", "64",
            "--device", "cpu", "--figures", str(figures),
            "--figure-genes", "ENSG00000188290"]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    n_tiles = int(anndata.read_h5ad(out).uns["diffst"]["tiles"]["n"])
    assert "predict tiles" in captured.out and f"{n_tiles}/{n_tiles}" in captured.out
    assert f"wrote {out}:" in captured.out and f"figures:     {figures}" in captured.out
    assert f"wrote 1 figure(s) to {figures}" in captured.err
    before = out.read_bytes()
    assert main(args) == 2
    assert f"{out}: output exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*args, "--overwrite", "--no-progress"]) == 0
    assert "predict tiles" not in capsys.readouterr().out


def test_var_carries_gene_ids_and_per_gene_metrics(
    ckpt: Path, small_visium: SpatialSample, tmp_path: Path
) -> None:
    adata = predict(ckpt, small_visium, tmp_path / "pred.h5ad", FAST)
    assert adata is not None
    var = anndata.read_h5ad(tmp_path / "pred.h5ad").var
    t = small_visium.spots
    assert t is not None
    ids = dict(zip(t.genes, t.gene_ids, strict=True))  # this fixture names genes by their ids
    assert list(var["gene_ids"]) == [ids[g] for g in var.index]
    assert set(var["feature_types"]) == {"Gene Expression"}
    k = 5
    np.testing.assert_allclose(var["lr_counts"].iloc[k], t.counts[:, k].sum())
    np.testing.assert_allclose(var["predicted_counts"].iloc[k], adata.X[:, k].sum(), rtol=1e-5)
    np.testing.assert_allclose(var["mean_std"].iloc[k], adata.layers["std"][:, k].mean(), rtol=1e-5)
    pcc = adata.uns["diffst"]["spot_consistency"]["pcc"]
    np.testing.assert_allclose(var["spot_pcc"].to_numpy(), [pcc[g] for g in var.index])


def test_cli_projects_unless_told_not_to() -> None:
    import argparse

    from diffst.commands.predict import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--checkpoint", "c", "--input", "i", "--out", "o.h5ad"]
    assert parser.parse_args(base).project is True
    assert parser.parse_args([*base, "--no-project"]).project is False


def test_sampler_defaults_to_the_checkpoints_own() -> None:
    from diffst.diffusion import DiffusionConfig

    small_like = DiffusionConfig(sampler="ddim", sampling_steps=10)
    assert PredictConfig().sampling(small_like) == ("ddim", 10)
    assert PredictConfig().sampling(DiffusionConfig()) == ("ddpm", 20)  # the paper's
    assert PredictConfig(sampler="dpmpp").sampling(small_like) == ("dpmpp", 10)
    assert PredictConfig(steps=3).sampling(small_like) == ("ddim", 3)
    with pytest.raises(ConfigError, match="steps"):
        PredictConfig(steps=0)
