"""The pipeline as a notebook user calls it, one function per CLI command.

========================  ================================================================
Python                    command line
========================  ================================================================
:func:`read`              ``--input`` / ``--platform`` of every command (and the readers
                          ``diffst.read_xenium``, ``read_merfish``, ``read_visium``, …)
:func:`prepare`           ``diffst prepare``
:func:`train`             ``diffst train``
:func:`predict`           ``diffst predict``
:func:`evaluate`          ``diffst evaluate``
:func:`benchmark`         ``diffst benchmark``
========================  ================================================================

Each function accepts a :class:`~diffst.io.sample.SpatialSample` or anything the CLI accepts
(a folder, a file, a bundled dataset name), and configuration objects or ``section.key=value``
overrides exactly as ``--set`` takes them. Torch is imported on first use only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import anndata

    from diffst.evaluation.api import EvaluationReport
    from diffst.evaluation.benchmark import BenchmarkConfig, BenchmarkResult
    from diffst.evaluation.config import EvaluateConfig
    from diffst.inference.config import PredictConfig
    from diffst.io.sample import SpatialSample
    from diffst.preparation.plan import PreparedStore
    from diffst.sections.config import PrepareConfig
    from diffst.training.loop import TrainResult

__all__ = ["benchmark", "evaluate", "predict", "prepare", "read", "train"]


def read(
    spec: SpatialSample | str | os.PathLike[str],
    platform: str = "auto",
    image_channels: Sequence[str] | None = None,
    section: str | None = None,
    he_image: str | os.PathLike[str] | None = None,
    he_alignment: str | os.PathLike[str] | None = None,
) -> SpatialSample:
    """A section: a :class:`SpatialSample` as it is, a bundled dataset by name
    (``merfish_mini``, ``cosmx_mini``, ``visium_mini``, ``visium_h5ad_mini``) or the folder or
    file at ``spec`` read by ``platform`` (``"auto"``: detected from the files present).

    ``image_channels`` picks the mosaics of a MERFISH section (``["DAPI"]``, ``["polyT"]`` or
    both), as ``--image-channels`` does; ``section`` one section of a folder that holds several
    (legacy ST as published; :func:`diffst.io.legacy_st.legacy_st_sections` lists them), as
    ``--section``; ``he_image`` and ``he_alignment`` a Xenium folder's registered post-run H&E
    and its 10x alignment CSV as the image, as ``--he-image`` / ``--he-alignment``.
    """
    from diffst.datasets import load_sample
    from diffst.io.sample import SpatialSample

    if isinstance(spec, SpatialSample):
        return spec
    return load_sample(spec, platform, image_channels, section, he_image, he_alignment)


def _with_overrides(cls: type, base: Any, overrides: Sequence[str]) -> Any:
    from diffst.config import apply_overrides, from_dict, to_dict

    cfg = base if base is not None else cls()
    if not overrides:
        return cfg
    return from_dict(cls, apply_overrides(to_dict(cfg), list(overrides)))


def prepare(
    sample: SpatialSample | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: PrepareConfig | None = None,
    *,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
) -> PreparedStore:
    """Build a store of paired HR/LR training patches with image views (``diffst prepare``).

    Parameters
    ----------
    sample
        Section with transcripts (or spot arrays with ``hr="spots"``) and an image.
    out_dir
        Store folder, written atomically.
    config
        :class:`~diffst.sections.config.PrepareConfig` (default: the paper's geometry).
    overrides
        ``section.key=value`` strings applied on top of ``config`` (``--set``), e.g.
        ``["genes=50", "split.block_um=136"]``.
    overwrite
        Replace an existing store.

    Returns
    -------
    PreparedStore
        The store's folder and manifest.
    """
    from pathlib import Path

    from diffst.preparation.api import prepare as _prepare
    from diffst.sections.config import PrepareConfig

    cfg = _with_overrides(PrepareConfig, config, overrides)
    return _prepare(read(sample), Path(out_dir), cfg, overwrite=overwrite)


def train(
    store: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    preset: str | None = None,
    overrides: Sequence[str] = (),
    *,
    config_file: str | os.PathLike[str] | None = None,
    resume: bool | str | os.PathLike[str] = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train the model on a prepared store (``diffst train``).

    Parameters
    ----------
    store
        Folder written by :func:`prepare`.
    out_dir
        Run folder: ``config.yaml``, ``log.csv``, ``tensorboard/``, ``checkpoints/``.
    preset
        ``"paper"``, ``"paper_corrective"``, ``"small"`` or ``"tiny"`` (``--preset``); ``None``:
        ``small`` for a new run, the run's own configuration when resuming.
    overrides
        ``section.key=value`` strings (``--set``), e.g. ``["train.max_steps=2000"]``.
    config_file
        YAML file applied between the preset and the overrides (``--config``).
    resume
        ``True`` continues the run in ``out_dir`` from its last checkpoint, with the
        checkpoint's own configuration plus ``overrides`` (``--resume``); a path continues
        from that checkpoint.
    overwrite
        Start a new run in a folder that holds an earlier one.
    progress
        Show a progress bar.
    """
    from pathlib import Path

    from diffst.training.checkpoint import training_run_config
    from diffst.training.loop import train as _train

    cfg = training_run_config(out_dir, preset, config_file, overrides, resume)
    return _train(Path(store), Path(out_dir), cfg, resume=resume, overwrite=overwrite,
                  progress=progress)  # fmt: skip


def predict(
    checkpoint: str | os.PathLike[str],
    sample: SpatialSample | str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    config: PredictConfig | None = None,
    *,
    library_id: str | None = None,
    figures_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    cells: str | os.PathLike[str] | None = None,
    cells_out: str | os.PathLike[str] | None = None,
    **options: Any,
) -> anndata.AnnData | None:
    """Super-resolve a whole section to AnnData with uncertainty (``diffst predict``).

    Parameters
    ----------
    checkpoint
        ``.pt`` file or run folder written by :func:`train`.
    sample
        The section (transcripts, spots or bin arrays; with its image when the model reads one).
    out_path
        ``.h5ad`` written atomically.
    config
        :class:`~diffst.inference.config.PredictConfig`; ``options`` (its field names, e.g.
        ``n_samples=8, steps=20, project_to_spots=False``) replace single fields.
    library_id, figures_dir, overwrite, progress
        As ``--library-id``, ``--figures``, ``--overwrite`` and the progress bar.
    cells, cells_out
        Cell boundaries (``--cells``: label image, GeoJSON or vertex table; see
        :mod:`diffst.inference.cells`): also write a per-cell AnnData to ``cells_out``
        (default ``<out stem>.cells.h5ad``), checked before any network work; the returned
        AnnData's ``uns['cells']`` then names that file and its cell counts.

    Returns
    -------
    anndata.AnnData | None
        Expected counts in ``X``, std and 90 % interval layers, ``obsm['spatial']`` in
        full-resolution pixels and ``uns['spatial']`` for scanpy/squidpy (``None`` on ranks
        other than 0 under ``torchrun``). A streamed prediction (``stream``, by default when
        the whole-section statistics exceed ``block_gib``) comes back without ``X`` and the
        layers, which stay in the file: :func:`read_prediction` reads the genes wanted.
    """
    import dataclasses

    from diffst.inference.api import predict as _predict
    from diffst.inference.config import PredictConfig

    cfg = dataclasses.replace(config or PredictConfig(), **options)
    section = read(sample)
    shapes, cells_path = None, None
    if cells is not None:
        from diffst.inference.api import check_output_path
        from diffst.inference.cells import cells_path_for, read_cells
        from diffst.inference.setup import checkpoint_store_meta
        from diffst.inference.subspots import check_subspot_options, is_spot_array

        if is_spot_array(checkpoint_store_meta(checkpoint)):
            check_subspot_options(None, cells)

        frame = section.image.um_to_px if section.image is not None else None
        shapes = read_cells(cells, frame)
        cells_path = check_output_path(cells_out or cells_path_for(out_path), overwrite=overwrite)
    adata = _predict(checkpoint, section, out_path, cfg, library_id=library_id,
                     figures_dir=figures_dir, overwrite=overwrite, progress=progress,
                     in_memory=shapes is not None)  # fmt: skip
    if adata is not None and shapes is not None and cells_path is not None:
        from diffst.inference.cells import write_cells

        per_cell = write_cells(adata, shapes, cells_path)
        adata.uns["cells"] = {"path": str(cells_path), **per_cell.uns["diffst_cells"]}
    return adata


def read_prediction(
    path: str | os.PathLike[str],
    genes: Sequence[str] | None = None,
    *,
    layers: bool = True,
) -> anndata.AnnData:
    """Read a prediction written by :func:`predict`, or only some of its genes, into memory.

    A streamed prediction of a large panel on a large section may not fit in memory whole;
    this reads just the columns of ``genes`` (in that order) of ``X`` and, with ``layers``, of
    ``std``/``q05``/``q95``/``sample_mean``, with all of ``obs``, ``var``, ``obsm`` and ``uns``.
    ``genes=None`` reads every gene.
    """
    from diffst.inference.to_anndata import read_prediction as _read

    return _read(path, None if genes is None else list(genes), layers=layers)


def evaluate(
    pred: anndata.AnnData | str | os.PathLike[str],
    truth: SpatialSample | str | os.PathLike[str],
    config: EvaluateConfig | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = "evaluate_out",
    split: str = "test",
    platform: str = "auto",
) -> EvaluationReport:
    """Score a prediction against the measured truth and the baselines (``diffst evaluate``).

    Parameters
    ----------
    pred
        AnnData or ``.h5ad`` written by :func:`predict`.
    truth
        A prepared store folder (its ``split`` is scored), a store split folder, or a section
        with transcripts (a folder read by ``platform``, or a bundled dataset name).
    config
        :class:`~diffst.evaluation.config.EvaluateConfig`.
    out_dir
        Report folder (``None``: compute only).
    split
        Store split scored when ``truth`` is a store.
    platform
        Reader of a raw truth section (``"auto"``: detected from the files).
    """
    from pathlib import Path

    from diffst.evaluation.api import evaluate as _evaluate
    from diffst.keys import StoreFile

    store: str | os.PathLike[str] | None = None
    if isinstance(truth, str | os.PathLike):
        path = Path(truth)
        if (path / StoreFile.MANIFEST).is_file() or (path.parent / StoreFile.MANIFEST).is_file():
            store = truth
    return _evaluate(pred, store if store is not None else read(truth, platform), config,
                     out_dir=out_dir, split=split)  # fmt: skip


def benchmark(
    sample: SpatialSample | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    prepare_config: PrepareConfig | None = None,
    config: BenchmarkConfig | None = None,
    *,
    held_out: SpatialSample | str | os.PathLike[str] | None = None,
) -> BenchmarkResult:
    """Prepare → train every method → predict the held-out region → score (``diffst benchmark``).

    Parameters
    ----------
    sample
        The training section.
    out_dir
        Output folder (store, runs, prediction, ``report.md``, ``metrics.csv``, figures).
    prepare_config
        :class:`~diffst.sections.config.PrepareConfig` of the store.
    config
        :class:`~diffst.evaluation.benchmark.BenchmarkConfig`: methods, preset, budget,
        seeds, sampling.
    held_out
        A second section scored as a whole (cross-section generalisation); without it the
        ``test`` split of ``sample`` is scored.
    """
    from pathlib import Path

    from diffst.evaluation.benchmark import run_benchmark
    from diffst.sections.config import PrepareConfig

    return run_benchmark(
        read(sample), Path(out_dir), prepare_config or PrepareConfig(), config,
        held_out=None if held_out is None else read(held_out),
    )  # fmt: skip
