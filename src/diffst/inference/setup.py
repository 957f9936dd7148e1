"""Before any network evaluation: load the checkpoint, check the section against it (genes,
image channels and modality, options) and build the per-section tiling context."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from diffst.allocator import tune_allocator
from diffst.config import ConfigError
from diffst.inference.config import PredictConfig
from diffst.io.sample import InputError, SpatialSample

if TYPE_CHECKING:
    from diffst.inference.tiled import TileContext

log = logging.getLogger("diffst.inference")

__all__ = [
    "checkpoint_image_channels",
    "checkpoint_store_meta",
    "imputation_weights",
    "precision_used",
    "resolve_genes",
    "set_up",
    "tile_context",
]


def resolve_genes(
    model_genes: list[str] | tuple[str, ...], sample: SpatialSample, max_missing: float = 0.0
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The checkpoint's genes checked against the section (names, or ids for spot tables).

    Returns ``(genes, missing)``: the checkpoint's genes in its order and those the section
    lacks. Diff-ST models have a fixed panel (``G`` input and output channels), so missing genes
    are still predicted, from an imputed LR input (:func:`imputation_weights`); more than
    ``max_missing`` (a share of the panel) raises :class:`InputError` listing them.
    """
    known = set(sample.genes)
    if sample.spots is not None:
        known |= set(sample.spots.gene_ids)
    missing = tuple(gene for gene in model_genes if gene not in known)
    if not missing:
        return tuple(model_genes), ()
    shown = ", ".join(missing[:20]) + (f", … ({len(missing)} in all)" if len(missing) > 20 else "")
    share = len(missing) / len(model_genes)
    where = next(iter(sample.source_files.values()), sample.name)
    if share > max_missing:
        raise InputError(
            f"{where}: field genes lacks {len(missing)} of the checkpoint's {len(model_genes)} "
            f"genes ({share:.0%}, more than predict.max_missing_genes = {max_missing:.0%}): "
            f"{shown}. Genes are matched by name and by id; a section measuring another panel "
            "needs a checkpoint trained on that panel (or raise --max-missing-genes: missing "
            "genes are predicted from co-expressed genes and the image, not measured)"
        )
    log.warning(
        "%s lacks %d of the checkpoint's %d genes (%s): their LR input is imputed from "
        "co-expressed genes; they are flagged var['in_section'] = False",
        where,
        len(missing),
        len(model_genes),
        shown,
    )
    return tuple(model_genes), missing


def imputation_weights(
    meta: dict[str, Any], genes: tuple[str, ...], missing: tuple[str, ...]
) -> np.ndarray:
    """``[G, G]`` weights of the imputed LR input of missing genes (rows of present genes are 0).

    A missing gene's normalised LR map is the average of the normalised LR maps of its training
    Pearson neighbours that the section measures (``store_meta['gene_neighbours']``: the genes
    most positively correlated with it over the training bins), weighted by the correlation.
    Without such a neighbour (or in checkpoints that do not record them) it is the plain average
    of all measured genes: the section's overall expression pattern. Either way it is a prior,
    not a measurement.
    """
    index = {g: k for k, g in enumerate(genes)}
    absent = np.zeros(len(genes), dtype=bool)
    absent[[index[g] for g in missing]] = True
    weights = np.zeros((len(genes), len(genes)), dtype=np.float32)
    neighbours = meta.get("gene_neighbours") or {}
    for g in np.flatnonzero(absent):
        row = np.zeros(len(genes), dtype=np.float64)
        if neighbours:
            for j, r in zip(neighbours["index"][g], neighbours["pearson"][g], strict=True):
                if 0 <= j < len(genes) and not absent[j] and r > 0:
                    row[j] = r
        if row.sum() <= 0:
            row[~absent] = 1.0
        weights[g] = row / row.sum()
    return weights


def _view_config(meta: dict[str, Any]) -> Any:
    import dataclasses

    from diffst.config import from_dict
    from diffst.sections.config import ViewConfig

    known = {f.name for f in dataclasses.fields(ViewConfig)}
    return from_dict(ViewConfig, {k: v for k, v in meta.get("views", {}).items() if k in known})


_STAINS = {"dapi", "polyt"}


def _stains_differ(trained: tuple[str, ...], present: tuple[str, ...]) -> bool:
    """Both images are named fluorescence stains (DAPI, polyT) and their sets differ."""
    a, b = {c.lower() for c in trained}, {c.lower() for c in present}
    return a <= _STAINS and b <= _STAINS and a != b


def checkpoint_store_meta(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """The store manifest a checkpoint recorded (``store_meta``; empty when absent)."""
    from diffst.runs.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)  # a .pt file or a run folder (its last.pt)
    return dict(state.get("store_meta", {}))


def checkpoint_image_channels(checkpoint: str | os.PathLike[str]) -> tuple[str, ...]:
    """Image channel names the checkpoint's model was trained on (empty when not recorded)."""
    image = checkpoint_store_meta(checkpoint).get("image", {})
    return tuple(str(c) for c in image.get("channels", ()))


def _check_image(sample: SpatialSample, bundle: Any, views: Any) -> tuple[Any, Any]:
    """The image the model needs and the view config with its channels, checked up front.

    Channels are picked by the training image's channel names when the checkpoint records them
    and the section has them all, else all channels are used (their number must match).
    Returns ``(None, views)`` for models without a histology branch.
    """
    from dataclasses import replace

    from diffst.sections.views import channel_indices

    meta = bundle.store_meta
    if not bundle.config.model.use_histology:
        return None, views
    image = sample.image
    if image is None:
        raise InputError(
            f"sample {sample.name!r}: field image is missing, but the checkpoint's model "
            "conditions on histology"
        )
    trained_image = meta.get("image", {})
    names = tuple(trained_image.get("channels", ()))
    if names and all(c in image.channels for c in names):
        views = replace(views, channels=names)
    elif names and _stains_differ(names, image.channels):
        raise InputError(
            f"{image.path or sample.name}: field channels: the image holds {list(image.channels)} "
            f"but the model was trained on {list(names)}; a model reads each channel as the "
            "stain it was trained on (for a MERFISH folder pass --image-channels "
            f"{' '.join(names)})"
        )
    n_channels = len(channel_indices(image, tuple(views.channels)))
    if n_channels != int(meta["image_channels"]):
        raise InputError(
            f"{image.path or sample.name}: field channels: the image has {n_channels} channel(s) "
            f"{list(image.channels)} but the model was trained on {meta['image_channels']} "
            f"{list(names) if names else ''}".rstrip()
        )
    kind = trained_image.get("kind")
    if kind and kind != image.kind:
        raise InputError(
            f"{image.path or sample.name}: field image kind: the section's image is {image.kind} "
            f"but the model was trained on {kind}; a model reads an H&E stain and a "
            "fluorescence channel differently, so predict with a checkpoint trained on "
            f"{image.kind} images"
        )
    trained = trained_image.get("um_per_px")
    if trained and abs(image.um_per_px / float(trained) - 1.0) > 0.01:
        log.warning(
            "image pixel size %.4g µm/px differs from training (%.4g µm/px): the views are "
            "resampled from the same µm extent to the training view size",
            image.um_per_px,
            float(trained),
        )
    return image, views


def _check_options(cfg: PredictConfig, model_genes: list[str]) -> None:
    """Configuration errors that need no data (raised before anything is loaded)."""
    import importlib.util

    if cfg.write_spatialdata and importlib.util.find_spec("spatialdata") is None:
        raise ConfigError(
            "predict.write_spatialdata: the optional package 'spatialdata' is not installed "
            "(pip install spatialdata), or leave the option off to write the h5ad only"
        )
    unknown = [g for g in cfg.figure_genes if g not in model_genes]
    if unknown:
        raise ConfigError(f"predict.figure_genes: {unknown} are not genes of the checkpoint")
    unknown = [g for g in cfg.uncertainty_genes or () if g not in model_genes]
    if unknown:
        raise ConfigError(f"predict.uncertainty_genes: {unknown} are not genes of the checkpoint")


def precision_used(cfg: PredictConfig, bundle: Any) -> str:
    """``bf16`` when asked for and native on the model's device, else ``fp32``."""
    from diffst.precision import native_bf16

    device = next(bundle.model.parameters()).device
    return "bf16" if cfg.precision == "bf16" and native_bf16(device) else "fp32"


def set_up(
    checkpoint: str | os.PathLike[str], sample: SpatialSample, cfg: PredictConfig, device: Any,
    hr_map: bool = True,
) -> tuple[Any, TileContext]:  # fmt: skip
    """Load the checkpoint, check the section against it and build the tiling context
    (``hr_map``: keep the section's HR counts, see :func:`tile_context`).

    Every input error is raised here, before any network evaluation.
    """
    from diffst.inference.config import resolve_estimator
    from diffst.runs.checkpoint import load_for_inference

    tune_allocator()
    bundle = load_for_inference(checkpoint, device)
    meta = bundle.store_meta
    _check_options(cfg, list(meta["genes"]))
    resolve_estimator(cfg.mean_estimator, bundle.schedule.prediction)
    if cfg.precision == "bf16" and precision_used(cfg, bundle) == "fp32":
        log.warning(
            "predict.precision=bf16: %s has no native bf16 (a CUDA GPU from Ampere on, or a CPU "
            "with AVX512-BF16 or AMX); computing in fp32",
            device,
        )
    return bundle, tile_context(
        meta, bundle.config.model.use_histology, sample, cfg, bundle.path, hr_map=hr_map
    )


class _Uses:
    """The two fields of a checkpoint bundle that the image checks read."""

    def __init__(self, meta: dict[str, Any], use_histology: bool) -> None:
        from types import SimpleNamespace

        self.store_meta = meta
        self.config = SimpleNamespace(model=SimpleNamespace(use_histology=use_histology))


def tile_context(
    meta: dict[str, Any], use_histology: bool, sample: SpatialSample, cfg: PredictConfig,
    source: str | os.PathLike[str] = "checkpoint",
    hr_map: bool = True,
) -> TileContext:  # fmt: skip
    """Check a section against a store manifest and build its tiling context.

    Parameters
    ----------
    meta
        Store manifest as recorded in a checkpoint (``store_meta``: genes, geometry,
        normalisation, views, image, ``hr_size``, ``lr_size``).
    use_histology
        Whether the network reads the image (then the section must have a matching one).
    sample
        The section.
    cfg
        Prediction options (gene-subset policy).
    source
        Named in errors.
    hr_map
        Keep the HR counts of a transcript section (``inputs.hr``: the truth a benchmark
        scores). Prediction alone needs the LR layer only: without it a grid layout keeps its
        LR cell counts, ``factor²`` times smaller (kept anyway when the tile side is not a whole
        number of LR cells).
    """
    from diffst.data.transforms import NormStats
    from diffst.inference.subspots import check_subspot_options, is_spot_array, subspot_inputs
    from diffst.inference.tiled import TileContext
    from diffst.sections.inputs import checkpoint_section_inputs, with_empty_genes
    from diffst.sections.stain import StainStats
    from diffst.sections.views import channel_indices, intensity_range, section_stain

    norm = NormStats.from_dict(meta["normalisation"])
    if norm.kind == "minmax_patch":
        raise ConfigError(
            f"{source}: normalisation 'minmax_patch' scales each patch by its HR maximum, "
            "which a new section does not have; train with log1p_gene to predict sections"
        )
    genes, missing = resolve_genes(meta["genes"], sample, cfg.max_missing_genes)
    sample = with_empty_genes(sample, missing)  # read as zeros, LR imputed per tile
    image, views = _check_image(sample, _Uses(meta, use_histology), _view_config(meta))
    subspots = None
    if is_spot_array(meta):  # measured spots as LR, a lattice k× finer as HR
        check_subspot_options(cfg.region_um)
        inputs, subspots, grid_image = subspot_inputs(sample, genes, meta)
        image = grid_image if image is not None else None
    else:
        whole_cells = int(meta["hr_size"]) % int(meta["geometry"]["factor"]) == 0
        inputs = checkpoint_section_inputs(
            sample, genes, meta, cfg.region_um, hr_map=hr_map or not whole_cells
        )
    ranges, stain = None, None
    if image is not None:
        chan = channel_indices(image, tuple(views.channels))
        ranges = intensity_range(image, chan, views.intensity_percentiles)
        if views.stain != "none":
            reference = meta.get("image", {}).get("stain", {}).get("reference")
            if reference is None:
                raise InputError(
                    f"{source}: field store_meta.image.stain.reference is missing (the store "
                    f"normalised its views with views.stain={views.stain})"
                )
            where = f"{source}: store_meta.image.stain.reference"
            stain = section_stain(image, chan, ranges, StainStats.from_dict(reference, where=where))
    return TileContext(
        inputs, norm, len(genes), image, views, ranges, int(meta["hr_size"]),
        int(meta["lr_size"]), stain, subspots, missing,
        imputation_weights(meta, genes, missing) if missing else None,
    )  # fmt: skip
