"""Training loop on the synthetic store: outputs, exact resume, NaN stop, bad stores."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from diffst.config import ConfigError, load_yaml
from diffst.io.sample import InputError
from diffst.runs.checkpoint import LAST, load_checkpoint, load_for_inference
from diffst.runs.config import run_config_from_dict
from diffst.training import loop
from diffst.training.loop import TrainingDivergedError, train

from .conftest import GENES, tiny_config, write_synthetic_store


@pytest.fixture(scope="module")
def run_a(store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, loop.TrainResult]:
    """5 steps over an epoch boundary (8 patches, batch 2), checkpoints at 3 and 5."""
    out = tmp_path_factory.mktemp("run") / "a"
    cfg = tiny_config("train.max_steps=5", "train.ckpt_every=3", "train.val_every=5")
    return out, train(store, out, cfg, progress=False)


def test_outputs_of_a_run(run_a: tuple[Path, loop.TrainResult]) -> None:
    out, result = run_a
    assert result.step == 5 and np.isfinite(result.loss)
    assert result.val_pcc is not None and -1 <= result.val_pcc <= 1
    assert result.val_pcc_bicubic is not None and 0 < result.val_pcc_bicubic <= 1
    cfg = run_config_from_dict(load_yaml(out / "config.yaml"))
    assert cfg.train.max_steps == 5
    assert (cfg.model.tissue_size, cfg.model.cell_grid, cfg.model.cell_tile_size) == (16, 4, 4)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == [LAST, "step_0000003.pt", "step_0000005.pt"]
    with open(out / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [int(r["epoch"]) for r in rows] == [0, 0, 0, 0, 1]  # 4 steps per epoch
    assert rows[-1]["val_pcc"] != "" and rows[0]["val_pcc"] == ""
    assert all(float(r["patches_per_s"]) > 0 for r in rows)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    state = load_checkpoint(out / "checkpoints" / LAST)
    assert (state["step"], state["epoch"], state["epoch_step"]) == (5, 1, 1)
    assert state["store_meta"]["genes"] == GENES
    assert state["store_meta"]["adjacency"].shape == (4, 4)


def test_resume_gives_identical_next_steps(
    run_a: tuple[Path, loop.TrainResult], store: Path, tmp_path: Path
) -> None:
    out_a, result_a = run_a
    out_b = tmp_path / "b"
    shutil.copytree(out_a, out_b)
    cfg = tiny_config("train.max_steps=5", "train.ckpt_every=3", "train.val_every=5")
    ckpt3 = out_b / "checkpoints" / "step_0000003.pt"
    result_b = train(store, out_b, cfg, resume=ckpt3, progress=False)
    assert result_b.loss == result_a.loss  # bit-identical losses of steps 4 and 5
    a = load_checkpoint(out_a / "checkpoints" / LAST)
    b = load_checkpoint(out_b / "checkpoints" / LAST)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]["weights"]:
        assert torch.equal(a["ema"]["weights"][key], b["ema"]["weights"][key]), key
    assert result_b.val_pcc == result_a.val_pcc
    with open(out_b / "log.csv", newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4, 5]


def test_inference_bundle(run_a: tuple[Path, loop.TrainResult]) -> None:
    out, _ = run_a
    bundle = load_for_inference(out, "cpu")
    state = load_checkpoint(out / "checkpoints" / LAST)
    assert not bundle.model.training and bundle.step == 5
    for key, value in bundle.model.state_dict().items():
        assert torch.equal(value, state["ema"]["weights"][key]), key
    assert bundle.store_meta["genes"] == GENES
    assert bundle.schedule.num_steps == bundle.config.diffusion.num_steps


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = loop.training_losses
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        terms = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # the third optimiser step
            vb = terms.vb * float("nan")
            terms = dataclasses.replace(terms, vb=vb, total=terms.simple + vb)
        return terms

    monkeypatch.setattr(loop, "training_losses", poisoned)
    cfg = tiny_config("train.max_steps=4", "train.ckpt_every=2", "train.val_every=0")
    with pytest.raises(
        TrainingDivergedError, match=r"at step 3: non-finite loss term \['total', 'vb'\]"
    ) as err:
        train(store, tmp_path, cfg, progress=False)
    assert "last good checkpoint" in str(err.value)
    assert load_checkpoint(tmp_path / "checkpoints" / LAST)["step"] == 2
    assert not (tmp_path / "checkpoints" / "step_0000003.pt").exists()


def test_resume_on_other_store_lists_differences(
    run_a: tuple[Path, loop.TrainResult], tmp_path: Path
) -> None:
    out_a, _ = run_a
    other = write_synthetic_store(tmp_path / "other")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["genes"] = [*GENES[:3], "synthE"]
    manifest["geometry"]["hr_um"] = 8.0
    (other / "manifest.json").write_text(json.dumps(manifest))
    cfg = tiny_config("train.max_steps=6")
    with pytest.raises(InputError, match="trained on a different store") as err:
        train(other, tmp_path / "run", cfg, resume=out_a / "checkpoints" / LAST, progress=False)
    msg = str(err.value)
    assert "genes: only in checkpoint ['synthD']; only in store ['synthE']" in msg
    assert "geometry.hr_um: checkpoint 5.0 vs store 8.0" in msg


def test_resume_with_changed_model_is_refused(
    run_a: tuple[Path, loop.TrainResult], store: Path, tmp_path: Path
) -> None:
    out_a, _ = run_a
    cfg = tiny_config("train.max_steps=6", "model.base_channels=16")
    with pytest.raises(ConfigError, match=r"changed configuration: model.base_channels: 8 → 16"):
        train(store, tmp_path, cfg, resume=out_a / "checkpoints" / LAST, progress=False)


def test_resume_without_checkpoint(store: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="the run folder has no checkpoint"):
        train(store, tmp_path, tiny_config(), resume=True, progress=False)


def test_empty_split_and_too_few_patches(tmp_path: Path) -> None:
    empty = write_synthetic_store(tmp_path / "empty", n_train=0)
    with pytest.raises(InputError, match=r"train: split 'train' holds no patches"):
        train(empty, tmp_path / "r1", tiny_config(), progress=False)
    few = write_synthetic_store(tmp_path / "few", n_train=3)
    with pytest.raises(InputError, match=r"3 patches are too few for one global batch of 4"):
        train(few, tmp_path / "r2", tiny_config("train.batch_size=4"), progress=False)


def test_validation_averages_draws_on_count_scale(
    run_a: tuple[Path, loop.TrainResult], store: Path
) -> None:
    from diffst.data import PatchDataset
    from diffst.data.transforms import NormStats, inverse_normalise
    from diffst.diffusion import sample_groups

    out, _ = run_a
    bundle = load_for_inference(out, "cpu")
    cfg = dataclasses.replace(
        bundle.config, train=dataclasses.replace(bundle.config.train, val_samples=2)
    )
    ds = PatchDataset(store, "val")
    batch = {k: torch.stack([ds[i][k] for i in (0, 1)]) for k in ds[0]}
    stats = NormStats.from_dict(bundle.store_meta["normalisation"])
    m = bundle.model
    with torch.no_grad():
        cond = m.encode_condition(batch["lr"], batch["tissue"], batch["cells"], batch["cell_score"])
        seeds = [cfg.train.val_seed + i for i in range(4)]
        shape = tuple(batch["hr"].shape)
        samples, _ = sample_groups(
            m, bundle.schedule, cond.repeat(2), (4, *shape[1:]), 2, sampler="ddim",
            steps=cfg.train.val_steps, seeds=seeds, device="cpu",
        )  # fmt: skip
        mean = inverse_normalise(samples, stats).mean(1)  # as validate(): counts, then the mean
        draws = [
            inverse_normalise(_one_draw(m, bundle, cond.select([i]), cfg, 2 * i + j), stats)
            for i in (0, 1)
            for j in (0, 1)
        ]
    # counts (expm1 of the model scale, values up to ~10): batched and single draws take different
    # convolution kernels, whose rounding differs by CPU; a wrong grouping of draws differs by O(1)
    tol = {"rtol": 1e-3, "atol": 1e-3}
    torch.testing.assert_close(mean[0], (draws[0][0] + draws[1][0]) / 2, **tol)
    torch.testing.assert_close(mean[1], (draws[2][0] + draws[3][0]) / 2, **tol)
    result = loop.validate(m, bundle.schedule, ds, cfg, bundle.store_meta, torch.device("cpu"))
    assert result["val_patches"] == 2 and -1 <= result["val_pcc"] <= 1
    assert 0 < result["val_pcc_nearest"] <= 1 and 0 < result["val_pcc_bicubic"] <= 1
    assert np.isnan(result["val_pcc_posterior"])  # an ε-network has no posterior-mean estimate


def test_validation_scores_the_posterior_mean_of_v_networks(
    run_a: tuple[Path, loop.TrainResult], store: Path
) -> None:
    from diffst.data import PatchDataset
    from diffst.data.transforms import NormStats, inverse_normalise
    from diffst.diffusion import NoiseSchedule, posterior_mean_draws
    from diffst.metrics import pearson_per_gene

    out, _ = run_a
    bundle = load_for_inference(out, "cpu")
    cfg = dataclasses.replace(
        bundle.config,
        diffusion=dataclasses.replace(bundle.config.diffusion, prediction="v"),
        train=dataclasses.replace(bundle.config.train, val_samples=2, val_max_patches=2),
    )
    schedule = NoiseSchedule.from_config(cfg.diffusion)
    ds = PatchDataset(store, "val")
    result = loop.validate(bundle.model, schedule, ds, cfg, bundle.store_meta, torch.device("cpu"))
    # the same estimate by hand: draws seeded like the samples, averaged on the model scale
    stats = NormStats.from_dict(bundle.store_meta["normalisation"])
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ds[0]}
    with torch.no_grad():
        cond = bundle.model.encode_condition(
            batch["lr"], batch["tissue"], batch["cells"], batch["cell_score"]
        ).repeat(2)
        seeds = [cfg.train.val_seed + i for i in range(4)]
        draws = posterior_mean_draws(
            bundle.model, schedule, cond, (4, 4, 8, 8), seeds=seeds, device="cpu"
        )
    mean = inverse_normalise(draws.reshape(2, 2, 4, 8, 8).mean(1), stats).numpy()
    mask = batch["mask"][:, 0].numpy() > 0
    pcc = pearson_per_gene(
        np.concatenate(list(mean), -1), np.concatenate(list(batch["hr_counts"].numpy()), -1),
        np.concatenate(list(mask), -1),
    )  # fmt: skip
    assert result["val_pcc_posterior"] == pytest.approx(float(np.nanmean(pcc)), abs=1e-4)


def _one_draw(model, bundle, cond, cfg, offset: int) -> torch.Tensor:
    from diffst.diffusion import sample

    return sample(
        model, bundle.schedule, cond, (1, 4, 8, 8), sampler="ddim", steps=cfg.train.val_steps,
        seeds=[cfg.train.val_seed + offset], device="cpu",
    )  # fmt: skip


def test_mean_head_run_logs_its_loss_resumes_and_predicts_around_mu(
    store: Path, tmp_path: Path
) -> None:
    """``diffusion.target='mean'``: training logs the regression's loss, resumes exactly, and
    the posterior-mean estimate at t = T is μ plus the network's residual there."""
    from diffst.diffusion import NoiseSchedule, posterior_mean_draws

    mean_cfg = ("model.mean_head=true", "diffusion.target=mean", "diffusion.prediction=v")
    cfg = tiny_config("train.max_steps=4", "train.ckpt_every=2", "train.val_every=4", *mean_cfg)
    out = tmp_path / "m"
    result = train(store, out, cfg, progress=False)
    with open(out / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert all(float(r["loss_mean"]) > 0 for r in rows)
    assert result.val_pcc is not None
    # resumed from the step-2 checkpoint: bit-identical steps 3 and 4, μ's weights included
    again = tmp_path / "again"
    shutil.copytree(out, again)
    resumed = train(store, again, cfg, resume=again / "checkpoints" / "step_0000002.pt",
                    progress=False)  # fmt: skip
    assert resumed.loss == result.loss
    a = load_checkpoint(out / "checkpoints" / LAST)["model"]
    b = load_checkpoint(again / "checkpoints" / LAST)["model"]
    assert "denoiser.mean_embed" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    from diffst.data import PatchDataset
    from diffst.diffusion.samplers import make_generators, seeded_normal

    bundle = load_for_inference(out, "cpu")
    ds = PatchDataset(store, "val")
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ds[0]}
    schedule = NoiseSchedule.from_config(bundle.config.diffusion)
    with torch.no_grad():
        cond = bundle.model.encode_condition(
            batch["lr"], batch["tissue"], batch["cells"], batch["cell_score"]
        )
        assert cond.mean is not None and cond.mean.shape == (2, 4, 8, 8)
        draws = posterior_mean_draws(
            bundle.model, schedule, cond, (2, 4, 8, 8), seeds=[0, 1], device="cpu",
            clip_denoised=False,
        )  # fmt: skip
        # by hand: x_T of those seeds, the network's x̂0 of the residual at T − 1, plus μ
        x_t = seeded_normal(make_generators([0, 1], "cpu"), (2, 4, 8, 8), device="cpu")
        last = torch.full((2,), schedule.num_steps - 1)
        v = bundle.model(x_t, schedule.model_timesteps(last), cond).prediction
        expected = schedule.predict_x0(v, x_t, last) + cond.mean
    torch.testing.assert_close(draws, expected)


def test_regression_twin_is_the_mean_pass_alone_with_averaged_weights(
    store: Path, tmp_path: Path
) -> None:
    """The regression twin of a mean-head run is the same network as a plain regressor (no mean
    head, no diffusion), and what it saves is the moving average of its weights, as the
    diffusion model is evaluated with its EMA weights."""
    from diffst.evaluation.regression import RegressionConfig, _load, train_regression

    cfg = tiny_config("model.mean_head=true", "diffusion.target=mean", "train.ema_decay=0.5")
    seen: list[float] = []
    path = train_regression(store, tmp_path / "twin.pt", cfg, RegressionConfig(steps=3,
                            batch_size=2), on_step=lambda s, loss: seen.append(loss))  # fmt: skip
    assert len(seen) == 3 and all(np.isfinite(seen))
    net, _, run_config = _load(path, store)
    assert not net.model.cfg.mean_head and net.model.denoiser.mean_embed is None
    assert run_config.diffusion.target == "mean"  # the run's own configuration is kept
    # the saved weights are the moving average: with decay 0 they are the last step's weights,
    # with decay 0.5 (same seed, same steps) an average of several steps, hence other weights
    plain_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, ema_decay=0.0))
    plain = train_regression(store, tmp_path / "plain.pt", plain_cfg,
                             RegressionConfig(steps=3, batch_size=2))  # fmt: skip
    averaged = torch.load(path, map_location="cpu", weights_only=False)["weights"]
    last = torch.load(plain, map_location="cpu", weights_only=False)["weights"]
    assert averaged.keys() == last.keys()
    assert any(not torch.equal(averaged[k], last[k]) for k in averaged)
