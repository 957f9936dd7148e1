"""``diffst benchmark``: prepare → train each method → predict → evaluate, one report.

Every method is scored on the same held-out :class:`~diffst.evaluation.region.Region` (the store's
``test`` split — spatial blocks never seen in training — or a whole held-out section), stitched
on the section's own LR grid, each bin once:

* ``diffst`` — the full model on ``diffst predict``'s tiles of the whole section (``K`` samples:
  point estimate, std, quantiles, samples; intervals also conformally calibrated on the
  validation split), written to ``prediction.h5ad``;
* ``diffst_sample_mean`` — the same samples' mean (when the point estimate is the denoiser's);
* ``regression`` — same encoders and UNet trained with MSE (no diffusion), on the same tiles;
* ``histology_only`` — the diffusion model without the LR input (``model.use_lr=false``);
* ``no_<switch>`` — the diffusion model with one component off (ablation table);
* ``nearest`` / ``bicubic`` — interpolation of the LR cells' measured-unit means;
* ``tesla`` — the TESLA peer when installed, else reported unavailable.

Spot-array stores (``--hr spots``) sample the store's held-out patches instead of tiles (see
:mod:`diffst.evaluation.benchmark_methods`).
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
from diffst.evaluation.benchmark_methods import PatchRoute, TiledRoute, sample_split
from diffst.evaluation.config import EvaluateConfig
from diffst.evaluation.region import LRContext, Region
from diffst.evaluation.scoring import MethodPrediction, project_prediction

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
    # write the full model's whole-section prediction (`prediction.h5ad`, calibrated intervals)
    predict_section: bool = True
    # learned methods' point predictions rescaled so each measured LR cell keeps its measured
    # total, as `diffst predict` writes them by default (`--no-project` to switch off); the full
    # model's and the regression's raw estimates are scored too, as `*_unprojected`
    project: bool = True
    # calibrate the full model's intervals on the validation split (split-conformal)
    calibrate: bool = True
    # try the TESLA adapter (reported unavailable when the package is not installed)
    tesla: bool = True
    # trainings run at once, each in its own process with this process's torch thread count
    # (1: one after another in this process, with progress bars). The trainings are independent,
    # so on a machine with spare cores (the demo's 2) the wall time of training divides by this
    train_workers: int = 1
    # scoring and report options
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def __post_init__(self) -> None:
        if self.n_samples < 2:
            raise ConfigError(
                f"benchmark.n_samples must be ≥ 2 for uncertainty, got {self.n_samples}"
            )
        if self.train_workers < 1:
            raise ConfigError(f"benchmark.train_workers must be ≥ 1, got {self.train_workers}")
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
        # without the LR map there is no residual over it: the HR map itself is generated (the
        # corrective process, target=mean, needs no LR map and is kept)
        target = "hr" if base.diffusion.target == "residual" else base.diffusion.target
        diffusion = dataclasses.replace(base.diffusion, target=target)
        out.append(
            (
                "histology_only",
                dataclasses.replace(base, model=model, diffusion=diffusion),
                f"no LR input (model.use_lr=false, diffusion.target={target})",
            )
        )
    for switch in cfg.ablations:
        name, what = ABLATIONS[switch]
        model = dataclasses.replace(base.model, **{switch: False})
        out.append((name, dataclasses.replace(base, model=model), what))
    return out


def _prepare_stores(
    samples: list[Any], held_out: Any, out: Path, prepare_cfg: Any, stages: _Stages
) -> tuple[Path, Path]:
    """The training store and the store holding the evaluated ``test`` split."""
    from diffst.config import atomic_write_text
    from diffst.data import StoreInfo
    from diffst.preparation.api import prepare

    store = out / "store"
    if prepare_cfg.hr == "spots" and held_out is not None:
        from diffst.preparation.spots.api import prepare_multi

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


def _train(name: str, run_config: Any, store: Path, out: Path, what: str, stages: _Stages) -> Path:
    from diffst.training.loop import train

    result = stages.run(
        f"train_{name}", f"train {name} ({what}), {run_config.train.max_steps} steps",
        train, store, out / "runs" / name, run_config, progress=True, overwrite=True,
    )  # fmt: skip
    return Path(result.checkpoint)


def _regression_config(run_config: Any, cfg: BenchmarkConfig) -> Any:
    from diffst.evaluation.regression import RegressionConfig

    return RegressionConfig(
        steps=cfg.regression_steps or run_config.train.max_steps,
        batch_size=run_config.train.batch_size,
        lr=run_config.train.lr,
        seed=run_config.train.seed,
    )


def _train_regression(
    run_config: Any, store: Path, out: Path, cfg: BenchmarkConfig, stages: _Stages
) -> Path:
    from diffst.evaluation.regression import train_regression

    rcfg = _regression_config(run_config, cfg)
    steps = rcfg.steps
    with stages.bar("train regression", steps) as advance:
        return Path(
            stages.run(
                "train_regression", f"train regression (MSE, no diffusion), {steps} steps",
                train_regression, store, out / "runs" / "regression.pt", run_config, rcfg,
                on_step=lambda *_: advance(1),
            )
        )  # fmt: skip


def _train_job(job: tuple[str, Any, Path, Path, Any, int]) -> tuple[str, Path, float]:
    """One training in a worker process: ``(name, checkpoint, seconds)``."""
    import torch

    name, run_config, store, out, rcfg, threads = job
    torch.set_num_threads(threads)
    start = time.perf_counter()
    if rcfg is not None:
        from diffst.evaluation.regression import train_regression

        path = train_regression(store, out / "runs" / "regression.pt", run_config, rcfg)
    else:
        from diffst.training.loop import train

        result = train(store, out / "runs" / name, run_config, progress=False, overwrite=True)
        path = Path(result.checkpoint)
    return name, Path(path), time.perf_counter() - start


def _train_parallel(
    methods: list[tuple[str, Any, str]], run_config: Any, store: Path, out: Path,
    cfg: BenchmarkConfig, stages: _Stages,
) -> dict[str, Path]:  # fmt: skip
    """Every training of the benchmark in ``cfg.train_workers`` processes at once (spawned, so
    no torch state is shared); each worker uses this process's torch thread count."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch

    threads = torch.get_num_threads()
    jobs = [(name, rc, store, out, None, threads) for name, rc, _ in methods]
    if cfg.regression:
        jobs.append(("regression", run_config, store, out, _regression_config(run_config, cfg),
                     threads))  # fmt: skip
    names = ", ".join(j[0] for j in jobs)

    def run_all() -> dict[str, Path]:
        done: dict[str, Path] = {}
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(cfg.train_workers, mp_context=context) as pool:
            futures = [pool.submit(_train_job, job) for job in jobs]
            for future in as_completed(futures):
                name, path, seconds = future.result()
                done[name] = path
                stages.timings[f"train_{name}"] = seconds
                stages.console.print(f"      {name} trained in {seconds:.1f} s")
        return done

    label = f"train {names}: {cfg.train_workers} at a time, one process each"
    return dict(stages.run("train", label, run_all))


def _predict_config(cfg: BenchmarkConfig) -> Any:
    from diffst.inference.config import PredictConfig

    pcfg = PredictConfig(
        n_samples=cfg.n_samples, seed=cfg.seed, n_figure_genes=0, device="cpu",
        mean_estimator=cfg.mean_estimator, project_to_spots=cfg.project,
    )  # fmt: skip
    if cfg.sampler is not None:
        pcfg = dataclasses.replace(pcfg, sampler=cfg.sampler)
    if cfg.steps is not None:
        pcfg = dataclasses.replace(pcfg, steps=cfg.steps)
    return pcfg


def _route(
    spots: bool, store: Path, eval_store: Path, evaluated: Any, training: Any, region: Region,
    cfg: BenchmarkConfig,
) -> Any:  # fmt: skip
    """How learned methods predict the region: tiles of the section, or the store's patches."""
    from diffst.data import StoreInfo
    from diffst.evaluation.api import load_store_split
    from diffst.evaluation.region import region_from_patches

    has_val = StoreInfo.load(store).n_patches.get("val", 0) > 0
    if spots:
        val = None
        if has_val and cfg.calibrate:
            vt, _ = load_store_split(store, "val")
            vr = region_from_patches(vt, what="validation patches")
            val = (vt, vr, _eval_dataset(store, store, "val"))
        truth, _ = load_store_split(eval_store, "test")
        return PatchRoute(truth, region, _eval_dataset(eval_store, store), cfg, eval_store, val)
    pcfg = _predict_config(cfg)
    shape = tuple(StoreInfo.load(eval_store).geometry["shape_hr"])
    val_part = None
    if has_val and cfg.calibrate:
        vt, _ = load_store_split(store, "val")
        val_shape = tuple(StoreInfo.load(store).geometry["shape_hr"])
        val_part = (training, region_from_patches(vt, what="validation patches"), val_shape)
    return TiledRoute(evaluated, region, shape, pcfg, val_part)


def _eval_dataset(eval_store: Path, train_store: Path, split: str = "test") -> Any:
    """A split's dataset normalised with the *training* store's statistics."""
    from diffst.data import PatchDataset, StoreInfo

    data = PatchDataset(eval_store, split, augment=False)
    if eval_store != train_store:
        train_info = StoreInfo.load(train_store)
        if tuple(data.info.genes) != tuple(train_info.genes):
            raise ConfigError(f"{eval_store}: gene panel differs from the training store's")
        data.info = dataclasses.replace(data.info, normalisation=train_info.normalisation)
    return data


def _section_context(route: Any, store: Path, split: str = "test") -> LRContext | None:
    """The section's LR grid around the region, for the baselines."""
    from diffst.evaluation.api import store_lr_context
    from diffst.metrics import pool_sum

    maps = getattr(route, "full", None)
    if maps is None:
        return store_lr_context(store, split)
    inputs = maps.ctx.inputs
    lr, mask = inputs.lr_section()
    geo = inputs.geometry
    if inputs.lr_layout == "grid":
        units = pool_sum(np.ones((1, *geo.shape_hr)), geo.factor)[0]
    else:  # pseudo-spots: one LR value sums a spot of this many bins
        units = np.full(mask.shape, np.pi * (inputs.spot_diameter_um / 2) ** 2 / geo.hr_um**2)
    return LRContext(np.asarray(lr, np.float32), np.asarray(mask, bool), units)


def _section_view(route: Any, region: Region, preds: list[MethodPrediction], cfg: Any) -> Any:
    """Whole-section maps for the report figure (tiled route only)."""
    from diffst.baselines import interpolation_baseline
    from diffst.evaluation.benchmark_methods import _on_section
    from diffst.evaluation.report import SectionView
    from diffst.inference.figures import image_on_grid
    from diffst.inference.uncertainty import Stat

    maps = getattr(route, "full", None)
    if maps is None or region.context is None or maps.ctx.inputs.hr is None:
        return None
    inputs, ctx = maps.ctx.inputs, region.context
    geo = inputs.geometry
    shape = geo.shape_hr
    lr_up = interpolation_baseline(
        "nearest", ctx.lr, geo.factor, shape, units=ctx.units, lr_mask=ctx.mask
    )
    views: dict[str, np.ndarray] = {}
    views["diffst"] = maps.stats[Stat.MEAN]
    if "bicubic" in cfg.evaluate.baselines:
        views["bicubic"] = interpolation_baseline(
            "bicubic", ctx.lr, geo.factor, shape, units=ctx.units, lr_mask=ctx.mask
        )
    if "regression" in route.section_maps:
        views["regression"] = route.section_maps["regression"]
    image = image_on_grid(maps.ctx.image, geo) if maps.ctx.image is not None else None
    return SectionView(
        truth=np.asarray(inputs.hr, np.float32), lr=lr_up, held_out=_on_section(region, shape),
        tissue=inputs.tissue, maps=views, std=maps.stats[Stat.STD], image=image,
    )  # fmt: skip


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
        :class:`diffst.sections.config.PrepareConfig` of the store(s).
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

    from diffst.evaluation.api import baseline_predictions, load_store_split
    from diffst.evaluation.benchmark_methods import patch_stitched_nearest
    from diffst.evaluation.region import region_from_patches
    from diffst.evaluation.report import analysis_notes, write_report
    from diffst.evaluation.scoring import score_all
    from diffst.inference.config import resolve_estimator
    from diffst.runs.config import resolve_run_config

    cfg = cfg or BenchmarkConfig()
    train_samples = _training_samples(samples, held_out, prepare_cfg)
    spots = prepare_cfg.hr == "spots"
    if spots and (cfg.predict_section or cfg.tesla):
        cfg = dataclasses.replace(cfg, predict_section=False, tesla=False)
    console = console or Console()
    out = Path(out_dir)
    run_config = resolve_run_config(cfg.preset, None, list(cfg.overrides))
    methods = _diffusion_methods(cfg, run_config)
    parallel = cfg.train_workers > 1
    n_train = 1 if parallel else len(methods) + cfg.regression
    n_stages = 2 + (held_out is not None) + len(methods) + n_train + cfg.regression
    stages = _Stages(n_stages + cfg.calibrate, console)
    start = time.perf_counter()
    store, eval_store = _prepare_stores(train_samples, held_out, out, prepare_cfg, stages)
    trained: dict[str, Path] = {}
    if parallel:
        trained = _train_parallel(methods, run_config, store, out, cfg, stages)
    truth, _ = load_store_split(eval_store, "test")
    region = region_from_patches(truth, what=f"{eval_store} test split")
    evaluated = held_out or train_samples[0]
    route = _route(spots, store, eval_store, evaluated, train_samples[0], region, cfg)
    preds: list[MethodPrediction] = []
    calibration = None
    for k, (name, rc, what) in enumerate(methods):
        ckpt = trained.get(name) or _train(name, rc, store, out, what, stages)
        whole = k == 0 and not spots  # the full model on the whole section (figure, h5ad)
        where = "the whole section" if whole else "the held-out region"
        pred, sample_mean = stages.run(
            f"predict_{name}", f"predict {name}: {cfg.n_samples} samples per tile of {where}",
            route.diffusion, ckpt, name, what, whole=whole,
        )  # fmt: skip
        if k == 0:
            if cfg.calibrate:
                calibration = stages.run(
                    "calibrate", "calibrate diffst's intervals on the validation split",
                    route.calibration, ckpt,
                )  # fmt: skip
            pred = dataclasses.replace(pred, calibration=calibration)
            lr_context = _section_context(route, eval_store)
            if lr_context is not None:
                region = region.with_context(lr_context)
            if cfg.predict_section and route.full is not None:
                _write_section(route, ckpt, evaluated, out, calibration)
        if cfg.project:
            if k == 0:
                preds.append(_unprojected(pred))
            pred = project_prediction(pred, region)
        preds.append(pred)
        estimator = resolve_estimator(cfg.mean_estimator, rc.diffusion.prediction)
        if name == "diffst" and estimator == "denoiser":
            preds.append(sample_mean)
    if cfg.regression:
        reg_ckpt = trained.get("regression")
        if reg_ckpt is None:
            reg_ckpt = _train_regression(run_config, store, out, cfg, stages)
        reg = stages.run(
            "predict_regression", "regression on the same tiles / patches",
            route.regression, reg_ckpt, store,
            "same encoders and UNet as diffst, trained with MSE, no noise",
        )  # fmt: skip
        if cfg.project:
            preds.append(_unprojected(reg))
            reg = project_prediction(reg, region)
        preds.append(reg)
    preds += baseline_predictions(region, cfg.evaluate)
    if cfg.tesla:
        from diffst.evaluation.tesla import tesla_prediction

        full = getattr(route, "full", None)
        geometry = full.ctx.inputs.geometry if full is not None else None
        preds.append(tesla_prediction(evaluated, region, geometry))
    scores = stages.run(
        "evaluate", "score every method on the held-out region", score_all, preds, region,
        cfg.evaluate,
    )  # fmt: skip
    stages.timings["total"] = time.perf_counter() - start
    grid = prepare_cfg.spots if spots else prepare_cfg
    old_way = patch_stitched_nearest(region, grid.patch, grid.stride)
    legacy = score_all([old_way], region, cfg.evaluate)
    lines = [*context, *_context_lines(train_samples, held_out, run_config, cfg, stages.timings)]
    lines.append(_legacy_line(legacy[0], scores))
    ablated = [ABLATIONS[a][0] for a in cfg.ablations]
    notes = analysis_notes(scores, region, run_config, region.n_patches, _n_train(store), ablated)
    files = write_report(
        scores, preds, region, out, cfg.evaluate, title=title, context=lines, notes=notes,
        section=_section_view(route, region, preds, cfg),
    )  # fmt: skip
    console.print(f"[bold green]report:[/] {files['report'].resolve()}")
    return BenchmarkResult(out, files["report"], {s.name: s for s in scores}, stages.timings)


def _write_section(route: Any, ckpt: Path, sample: Any, out: Path, calibration: Any) -> None:
    from diffst.inference.api import write_prediction

    write_prediction(
        route.full, ckpt, sample, out / "prediction.h5ad", route.pcfg, overwrite=True,
        calibration=calibration,
    )  # fmt: skip


def _unprojected(pred: MethodPrediction) -> MethodPrediction:
    """A learned method's raw point estimate, before the LR projection (diagnostic row)."""
    return dataclasses.replace(
        pred, name=f"{pred.name}_unprojected", std=None, q05=None, q95=None, samples=None,
        calibration=None, description=f"{pred.name} before the projection onto the LR totals "
        "(`diffst predict --no-project`)",
    )  # fmt: skip


def _legacy_line(legacy: Any, scores: Sequence[Any]) -> str:
    nearest = next((s for s in scores if s.name == "nearest"), None)
    if nearest is None or legacy.unavailable is not None:
        return ""
    old = float(np.nanmean(legacy.genes["pcc"]))
    new = float(np.nanmean(nearest.genes["pcc"]))
    return (
        f"Nearest upsampling scores PCC {new:.3f} on the section's one LR grid; stitched from "
        f"overlapping patches that each pool their own LR window (the previous protocol) it "
        f"scored {old:.3f} on the same bins, because those windows see LR cells at other "
        "offsets than one LR grid holds."
    )


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
