"""``diffst benchmark``: prepare → train each method → predict → evaluate, one report.

Methods, all scored on the same held-out patches (the store's ``test`` split, spatial blocks
never seen in training, or a whole held-out section):

* ``diffst`` — the full model, ``K`` samples per patch (mean, std, q05, q95, samples);
* ``regression`` — same encoders and UNet trained with MSE (no diffusion);
* ``histology_only`` — the diffusion model without the LR input (``model.use_lr=false``);
* ``no_<switch>`` — the diffusion model with one component off (ablation table);
* ``nearest`` / ``bicubic`` — interpolation of the LR map;
* ``tesla`` — the TESLA peer when installed, else reported unavailable.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from diffst.config import ConfigError
from diffst.evaluate.config import EvaluateConfig
from diffst.evaluate.scoring import MethodPrediction, PatchSet
from diffst.keys import BatchKey

__all__ = ["ABLATIONS", "BenchmarkConfig", "BenchmarkResult", "run_benchmark", "sample_split"]

AblationSwitch = Literal["use_graph", "use_cross_attention", "use_disentangle", "use_modulation"]
#: ablation switch → (method name, what is removed)
ABLATIONS: dict[str, tuple[str, str]] = {
    "use_graph": ("no_graph", "gene-correlation graph convolution off"),
    "use_cross_attention": ("no_cross_attention", "dynamic cross-attention to cell tiles off"),
    "use_disentangle": ("no_disentangle", "common/distinct disentangling off"),
    "use_modulation": ("no_modulation", "cross-modal adaptive modulation off"),
}


@dataclass(frozen=True)
class BenchmarkConfig:
    """What ``run_benchmark`` trains and how it samples."""

    # training preset of every learned method (diffst, regression, histology-only, ablations)
    preset: str = "small"
    # ``section.key=value`` overrides applied to the preset (e.g. "train.max_steps=200")
    overrides: tuple[str, ...] = ()
    # train and score the regression network (no-diffusion ablation)
    regression: bool = True
    # train and score the histology-only diffusion model (model.use_lr=false)
    histology_only: bool = True
    # components switched off one at a time, each a separately trained model
    ablations: tuple[AblationSwitch, ...] = ()
    # optimiser steps of the regression network (None: the preset's train.max_steps)
    regression_steps: int | None = None
    # samples per patch for the diffusion models (K; mean/std/quantiles/CRPS from them)
    n_samples: int = 8
    # sampler and number of steps (None: the preset's diffusion.sampler / sampling_steps)
    sampler: Literal["ddpm", "ddim", "dpmpp"] | None = None
    steps: int | None = None
    # base seed of the sampling noise (per patch and sample: seed + 1000·patch + k)
    seed: int = 0
    # point prediction of the diffusion models (PredictConfig.mean_estimator); with the
    # denoiser's estimate the full model's mean of samples is scored too, as `diffst_sample_mean`
    mean_estimator: Literal["auto", "denoiser", "samples"] = "auto"
    # also run whole-section `diffst predict` with the full model and score it on the patches
    predict_section: bool = True
    # whole-section prediction rescaled so that each LR cell's predicted total matches its
    # measured count (`diffst predict --project`); the patch-sampled `diffst` row stays raw
    project_section: bool = True
    # try the TESLA adapter (reported unavailable when the package is not installed)
    tesla: bool = True
    # scoring and report options
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def __post_init__(self) -> None:
        if self.n_samples < 2:
            raise ConfigError(
                f"benchmark.n_samples must be ≥ 2 for uncertainty, got {self.n_samples}"
            )
        unknown = [a for a in self.ablations if a not in ABLATIONS]
        if unknown:
            raise ConfigError(f"benchmark.ablations: unknown {unknown}; valid {list(ABLATIONS)}")


@dataclass(frozen=True)
class BenchmarkResult:
    """Where the report is and what each stage cost."""

    out_dir: Path
    report: Path
    scores: dict[str, Any]
    timings_s: dict[str, float]


def _batch(items: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def sample_split(
    checkpoint: str | Path,
    dataset: Any,
    *,
    name: str,
    n_samples: int,
    sampler: Literal["ddpm", "ddim", "dpmpp"] | None = None,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 4,
    description: str = "",
    on_patch: Callable[[int], None] | None = None,
    mean_estimator: Literal["auto", "denoiser", "samples"] = "auto",
) -> MethodPrediction:
    """Draw ``K`` samples for every patch of a dataset with a trained diffusion checkpoint.

    Parameters
    ----------
    checkpoint
        ``diffst train`` checkpoint (EMA weights are used).
    dataset
        :class:`diffst.data.PatchDataset` (no augmentation) whose normalisation matches the
        checkpoint's.
    n_samples
        K samples per patch; sample ``k`` of patch ``i`` is seeded ``seed + 1000·i + k``.
    mean_estimator
        The point prediction ``mean``, as ``PredictConfig.mean_estimator``: the samples' mean,
        or the denoiser's posterior mean at t = T averaged over K draws seeded like the samples
        (``auto``: the denoiser for v/x0 checkpoints).

    Returns
    -------
    :class:`MethodPrediction` with ``mean, std, q05, q95 [N, G, P, P]`` and
    ``samples [N, K, G, P, P]`` on the count scale.
    """
    import torch

    from diffst.data import inverse_normalise
    from diffst.diffusion import sample_groups
    from diffst.predict.config import resolve_estimator
    from diffst.train.checkpoint import load_for_inference

    bundle = load_for_inference(checkpoint, "cpu")
    model: Any = bundle.model
    dcfg = bundle.config.diffusion
    sampler, steps = sampler or dcfg.sampler, steps or dcfg.sampling_steps
    estimator = resolve_estimator(mean_estimator, bundle.schedule.prediction, "mean_estimator")
    norm = dataset.info.normalisation
    out, points = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            idx = list(range(start, min(len(dataset), start + batch_size)))
            batch = _batch([dataset[i] for i in idx])
            cond = model.encode_condition(
                batch[BatchKey.LR], batch[BatchKey.TISSUE], batch[BatchKey.CELLS],
                batch[BatchKey.CELL_SCORE],
            ).repeat(n_samples)  # fmt: skip
            shape = (len(idx) * n_samples, *batch[BatchKey.HR].shape[1:])
            x0, posterior = sample_groups(
                model, bundle.schedule, cond, shape, n_samples, sampler=sampler, steps=steps,
                seeds=[seed + 1000 * i + k for i in idx for k in range(n_samples)],
                device="cpu", clip_denoised=dcfg.clip_denoised,
                posterior_mean=estimator == "denoiser",
            )  # fmt: skip
            scale = batch.get(BatchKey.NORM_SCALE)
            out.append(
                inverse_normalise(x0, norm, None if scale is None else scale[:, None])
                .float()
                .numpy()
            )
            if posterior is not None:
                points.append(inverse_normalise(posterior, norm, scale).float().numpy())
            if on_patch is not None:
                on_patch(len(idx))
    samples = np.concatenate(out).astype(np.float32)
    lo, hi = np.quantile(samples, [0.05, 0.95], axis=1)
    point = np.concatenate(points).astype(np.float32) if points else samples.mean(axis=1)
    what = "denoiser posterior mean" if estimator == "denoiser" else "mean of the samples"
    return MethodPrediction(
        name,
        point,
        samples.std(axis=1, ddof=1),
        lo.astype(np.float32),
        hi.astype(np.float32),
        samples,
        description=", ".join(
            x
            for x in (
                description,
                f"{n_samples} samples per patch, {sampler} {steps} steps; point prediction: {what}",
            )
            if x
        ),
    )


class _Stages:
    """Numbered stage lines, per-stage timings and rich progress bars for inner loops."""

    def __init__(self, total: int, console: Any) -> None:
        self.total, self.n, self.console = total, 0, console
        self.timings: dict[str, float] = {}

    def run(self, key: str, label: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        self.n += 1
        self.console.print(f"[bold cyan][{self.n}/{self.total}][/] {label}")
        start = time.perf_counter()
        out = fn(*args, **kw)
        self.timings[key] = time.perf_counter() - start
        self.console.print(f"      done in {self.timings[key]:.1f} s")
        return out

    def bar(self, description: str, total: int) -> Any:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        return _Bar(
            Progress(
                "      " + description,
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            ),
            total,
        )


class _Bar:
    def __init__(self, progress: Any, total: int) -> None:
        self.progress, self.total = progress, total

    def __enter__(self) -> Callable[..., None]:
        self.progress.__enter__()
        task = self.progress.add_task("", total=self.total)
        return lambda n=1: self.progress.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)


def _diffusion_methods(cfg: BenchmarkConfig, base: Any) -> list[tuple[str, Any, str]]:
    """(name, run config, description) of every diffusion model to train."""
    out = [("diffst", base, "full model")]
    if cfg.histology_only:
        model = dataclasses.replace(base.model, use_lr=False)
        # without the LR map there is no residual to diffuse: the HR map itself is generated
        diffusion = dataclasses.replace(base.diffusion, target="hr")
        out.append(
            (
                "histology_only",
                dataclasses.replace(base, model=model, diffusion=diffusion),
                "no LR input (model.use_lr=false, diffusion.target=hr)",
            )
        )
    for switch in cfg.ablations:
        name, what = ABLATIONS[switch]
        model = dataclasses.replace(base.model, **{switch: False})
        out.append((name, dataclasses.replace(base, model=model), what))
    return out


def _eval_dataset(eval_store: Path, train_store: Path) -> Any:
    """Test-split dataset normalised with the *training* store's statistics."""
    from diffst.data import PatchDataset, StoreInfo

    data = PatchDataset(eval_store, "test", augment=False)
    if eval_store != train_store:
        train_info = StoreInfo.load(train_store)
        if tuple(data.info.genes) != tuple(train_info.genes):
            raise ConfigError(f"{eval_store}: gene panel differs from the training store's")
        data.info = dataclasses.replace(data.info, normalisation=train_info.normalisation)
    return data


def _prepare_stores(
    samples: list[Any], held_out: Any, out: Path, prepare_cfg: Any, stages: _Stages
) -> tuple[Path, Path]:
    """The training store and the store holding the evaluated ``test`` split."""
    from diffst.config import atomic_write_text
    from diffst.data import StoreInfo
    from diffst.prepare.api import prepare

    store = out / "store"
    if prepare_cfg.hr == "spots" and held_out is not None:
        from diffst.prepare.spots_api import prepare_multi

        names = ", ".join(x.name for x in samples)
        stages.run(
            "prepare",
            f"prepare {names} (train/val) + {held_out.name} (test) → {store}",
            prepare_multi,
            samples,
            held_out,
            store,
            prepare_cfg,
            overwrite=True,
        )
        return store, store
    sample = samples[0]
    stages.run(
        "prepare",
        f"prepare {sample.name} → {store}",
        prepare,
        sample,
        store,
        prepare_cfg,
        overwrite=True,
    )
    if held_out is None:
        return store, store
    genes_file = out / "training_genes.txt"
    atomic_write_text(genes_file, "\n".join(StoreInfo.load(store).genes) + "\n")
    held_cfg = dataclasses.replace(
        prepare_cfg, gene_list=genes_file,
        split=dataclasses.replace(prepare_cfg.split, fractions=(0.0, 0.0, 1.0)),
    )  # fmt: skip
    held_store = out / "store_held_out"
    stages.run(
        "prepare_held_out",
        f"prepare held-out section {held_out.name} (training panel)",
        prepare,
        held_out,
        held_store,
        held_cfg,
        overwrite=True,
    )
    return store, held_store


def _train_and_sample(
    name: str, run_config: Any, store: Path, data: Any, out: Path, cfg: BenchmarkConfig,
    description: str, stages: _Stages,
) -> tuple[MethodPrediction, Path]:  # fmt: skip
    from diffst.train.loop import train

    result = stages.run(
        f"train_{name}",
        f"train {name} ({description}), {run_config.train.max_steps} steps",
        train,
        store,
        out / "runs" / name,
        run_config,
        overwrite=True,
        progress=True,
    )
    with stages.bar(f"sample {name}", len(data)) as advance:
        pred = stages.run(
            f"sample_{name}", f"sample {name}: {cfg.n_samples} samples per held-out patch",
            sample_split, result.checkpoint, data, name=name, n_samples=cfg.n_samples,
            sampler=cfg.sampler, steps=cfg.steps, seed=cfg.seed, description=description,
            on_patch=advance, mean_estimator=cfg.mean_estimator,
        )  # fmt: skip
    return pred, result.checkpoint


def _regression(
    run_config: Any, store: Path, eval_store: Path, out: Path, cfg: BenchmarkConfig,
    stages: _Stages,
) -> MethodPrediction:  # fmt: skip
    from diffst.evaluate.regression import RegressionConfig, predict_regression, train_regression

    steps = cfg.regression_steps or run_config.train.max_steps
    rcfg = RegressionConfig(
        steps=steps,
        batch_size=run_config.train.batch_size,
        lr=run_config.train.lr,
        seed=run_config.train.seed,
    )
    with stages.bar("train regression", steps) as advance:
        ckpt = stages.run(
            "train_regression",
            f"train regression (MSE, no diffusion), {steps} steps",
            train_regression,
            store,
            out / "runs" / "regression.pt",
            run_config,
            rcfg,
            on_step=lambda *_: advance(1),
        )
    mean = stages.run(
        "predict_regression",
        "predict regression on the held-out patches",
        predict_regression,
        ckpt,
        eval_store,
        "test",
        train_store=store,
    )
    return MethodPrediction(
        "regression",
        mean,
        description="same encoders and UNet as diffst, trained with MSE, no noise",
    )


def _section_prediction(
    checkpoint: Path, sample: Any, truth: PatchSet, geo: dict[str, Any], out: Path,
    cfg: BenchmarkConfig, stages: _Stages,
) -> tuple[MethodPrediction, PatchSet]:  # fmt: skip
    from diffst.evaluate.api import _compare_geometry, load_prediction, prediction_patches
    from diffst.predict.api import predict
    from diffst.predict.config import PredictConfig

    pcfg = PredictConfig(
        n_samples=cfg.n_samples,
        seed=cfg.seed,
        n_figure_genes=0,
        project_to_spots=cfg.project_section,
        mean_estimator=cfg.mean_estimator,
    )
    if cfg.sampler is not None:
        pcfg = dataclasses.replace(pcfg, sampler=cfg.sampler)
    if cfg.steps is not None:
        pcfg = dataclasses.replace(pcfg, steps=cfg.steps)
    path = out / "prediction.h5ad"
    adata = stages.run(
        "predict_section",
        f"diffst predict: whole section → {path}",
        predict,
        checkpoint,
        sample,
        path,
        pcfg,
        overwrite=True,
    )
    grid = load_prediction(adata if adata is not None else path)
    offset = _compare_geometry(grid, truth.genes, geo, "held-out patches")
    shifted = dataclasses.replace(truth, origin_bins=truth.origin_bins + offset[None])
    pred = prediction_patches(
        grid,
        shifted,
        "diffst_section",
        f"`diffst predict` on the whole section ({cfg.n_samples} samples per tile, tiles "
        "blended"
        + (
            ", bins rescaled so each LR cell's total matches its measurement"
            if cfg.project_section
            else ""
        )
        + "), cut at the held-out patches; output `prediction.h5ad`",
    )
    return pred, shifted


def run_benchmark(
    samples: Any,
    out_dir: str | Path,
    prepare_cfg: Any,
    cfg: BenchmarkConfig | None = None,
    *,
    held_out: Any = None,
    title: str = "diffst benchmark",
    context: Sequence[str] = (),
    console: Any = None,
) -> BenchmarkResult:
    """Prepare, train every configured method, predict the held-out region and report.

    Parameters
    ----------
    samples
        The training section (:class:`~diffst.io.sample.SpatialSample`) or a sequence of them.
        Several sections need spot-array stores (``prepare_cfg.hr == "spots"``) and
        ``held_out``: one store is built across them. Without ``held_out`` the ``test`` split
        (spatial blocks never trained on) of the single training section is evaluated.
    out_dir
        Output folder: ``store/``, ``runs/<method>/``, ``prediction.h5ad``, ``report.md``,
        ``metrics.csv``, ``per_gene.csv``, ``figures/``.
    prepare_cfg
        :class:`diffst.prepare.config.PrepareConfig` of the store(s).
    cfg
        Methods, training preset, sampling. Whole-section prediction and TESLA are skipped for
        spot-array stores (their HR map is the spot array itself).
    held_out
        A section evaluated as a whole (cross-section generalisation); the gene panel and the
        normalisation statistics come from the training section(s) only.
    title, context
        Report title and extra context lines.
    console
        ``rich.console.Console`` for progress output (default: a new one).
    """
    from rich.console import Console

    from diffst.evaluate.api import baseline_predictions, load_store_split
    from diffst.evaluate.report import analysis_notes, write_report
    from diffst.evaluate.scoring import score_method
    from diffst.predict.config import resolve_estimator
    from diffst.train.config import resolve_run_config

    cfg = cfg or BenchmarkConfig()
    train_samples = _training_samples(samples, held_out, prepare_cfg)
    spots = prepare_cfg.hr == "spots"
    if spots and (cfg.predict_section or cfg.tesla):
        cfg = dataclasses.replace(cfg, predict_section=False, tesla=False)
    console = console or Console()
    out = Path(out_dir)
    run_config = resolve_run_config(cfg.preset, None, list(cfg.overrides))
    methods = _diffusion_methods(cfg, run_config)
    n_stages = 2 + (held_out is not None) + 2 * len(methods) + 2 * cfg.regression
    stages = _Stages(n_stages + cfg.predict_section, console)
    start = time.perf_counter()
    store, eval_store = _prepare_stores(train_samples, held_out, out, prepare_cfg, stages)
    data = _eval_dataset(eval_store, store)
    truth, geo = load_store_split(eval_store, "test")
    preds: list[MethodPrediction] = []
    checkpoints: dict[str, Path] = {}
    for name, rc, what in methods:
        pred, checkpoints[name] = _train_and_sample(name, rc, store, data, out, cfg, what, stages)
        preds.append(pred)
        estimator = resolve_estimator(cfg.mean_estimator, rc.diffusion.prediction)
        if name == "diffst" and estimator == "denoiser" and pred.samples is not None:
            preds.append(
                dataclasses.replace(
                    pred,
                    name="diffst_sample_mean",
                    mean=pred.samples.mean(axis=1),
                    description=f"diffst scored on the mean of its {cfg.n_samples} samples",
                )
            )
    if cfg.regression:
        preds.append(_regression(run_config, store, eval_store, out, cfg, stages))
    if cfg.predict_section:
        section_pred, truth = _section_prediction(
            checkpoints["diffst"], held_out or train_samples[0], truth, geo, out, cfg, stages
        )
        preds.insert(1, section_pred)
    preds += baseline_predictions(truth, cfg.evaluate)
    if cfg.tesla:
        from diffst.evaluate.tesla import tesla_prediction
        from diffst.prepare.binning import GridGeometry

        evaluated = held_out or train_samples[0]
        preds.append(tesla_prediction(evaluated, truth, GridGeometry.from_dict(geo)))
    scores = stages.run(
        "evaluate",
        "score every method on the held-out patches",
        lambda: [score_method(p, truth, cfg.evaluate) for p in preds],
    )
    stages.timings["total"] = time.perf_counter() - start
    lines = [*context, *_context_lines(train_samples, held_out, run_config, cfg, stages.timings)]
    ablated = [ABLATIONS[a][0] for a in cfg.ablations]
    notes = analysis_notes(scores, truth, run_config, len(data), _n_train(store), ablated)
    files = write_report(
        scores, preds, truth, out, cfg.evaluate, title=title, context=lines, notes=notes
    )
    console.print(f"[bold green]report:[/] {files['report'].resolve()}")
    return BenchmarkResult(out, files["report"], {s.name: s for s in scores}, stages.timings)


def _training_samples(samples: Any, held_out: Any, prepare_cfg: Any) -> list[Any]:
    """The training sections as a list; several need spot-array stores and a held-out one."""
    from diffst.io.sample import SpatialSample

    items = [samples] if isinstance(samples, SpatialSample) else list(samples)
    if not items:
        raise ConfigError("benchmark: no training section given")
    if len(items) > 1 and (held_out is None or prepare_cfg.hr != "spots"):
        raise ConfigError(
            f"benchmark: {len(items)} training sections need prepare.hr=spots and a held-out "
            "section (one store across sections is built for spot arrays); with binned "
            "transcripts pass one training section and the evaluated section as `held_out`"
        )
    return items


def _n_train(store: Path) -> int:
    from diffst.data import StoreInfo

    return StoreInfo.load(store).n_patches.get("train", 0)


def _context_lines(
    samples: list[Any], held_out: Any, run_config: Any, cfg: BenchmarkConfig,
    timings: dict[str, float],
) -> list[str]:  # fmt: skip
    tc, dc = run_config.train, run_config.diffusion
    names = ", ".join(f"`{x.name}`" for x in samples)
    where = (
        f"held-out section `{held_out.name}` (trained on {names})"
        if held_out
        else f"the `test` split of {names} (spatial blocks never used in training)"
    )
    time_text = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    return [
        f"Evaluated region: {where}.",
        f"Training: preset `{cfg.preset}` {list(cfg.overrides) or ''}, {tc.max_steps} steps of "
        f"batch {tc.batch_size}, learning rate {tc.lr:g}; sampling: "
        f"{cfg.sampler or dc.sampler} with {cfg.steps or dc.sampling_steps} steps, "
        f"K = {cfg.n_samples} samples per patch.",
        f"Wall-clock times: {time_text}.",
    ]
