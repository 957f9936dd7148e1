"""``evaluate(pred, truth, cfg)``: score a ``diffst predict`` output against measured truth.

The prediction (AnnData or ``.h5ad``) is put back on its section grid; the truth is either a
:class:`~diffst.io.sample.SpatialSample` (binned on the prediction's grid) or a split of a
prepared store. Both are cut into the same patches, the interpolation baselines are computed from
the same LR input, every method is scored by :func:`diffst.evaluate.scoring.score_method`, and
:func:`diffst.evaluate.report.write_report` writes tables and figures.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffst.config import ConfigError
from diffst.evaluate import metrics as met
from diffst.evaluate.config import EvaluateConfig
from diffst.evaluate.scoring import MethodPrediction, MethodScores, PatchSet
from diffst.geometry import GeometryError
from diffst.io.sample import InputError, SpatialSample
from diffst.keys import AnnDataKey, StoreFile

if TYPE_CHECKING:
    import anndata

__all__ = [
    "EvaluationReport",
    "PredictionGrid",
    "evaluate",
    "load_prediction",
    "load_store_split",
    "prediction_patches",
    "truth_from_sample",
]


# ---------------------------------------------------------------- prediction and truth inputs
@dataclass(frozen=True)
class PredictionGrid:
    """A ``diffst predict`` AnnData put back on its section grid.

    ``layers`` maps ``mean``/``std``/``q05``/``q95`` to ``[G, H, W]`` float32 (0 outside the
    predicted bins); ``tissue`` ``[H, W]`` bool marks the predicted bins; ``geometry`` holds
    ``origin_um``, ``hr_um``, ``factor``, ``shape_hr`` (and ``patch`` when recorded).
    """

    genes: tuple[str, ...]
    layers: dict[str, np.ndarray]
    tissue: np.ndarray
    geometry: dict[str, Any]
    source: str


def _geometry_from_uns(uns: dict[str, Any], source: str) -> dict[str, Any]:
    meta = uns.get(AnnDataKey.UNS.value)
    if not isinstance(meta, dict):
        meta = {}
    geo = meta.get("geometry")
    need = ("origin_um", "hr_um", "factor", "shape_hr")
    if not isinstance(geo, dict) or any(k not in geo for k in need):
        raise InputError(
            f"{source}: uns['{AnnDataKey.UNS.value}']['geometry'] with keys {list(need)} is "
            "required (write the prediction with `diffst predict`)"
        )
    out = {
        "origin_um": tuple(float(v) for v in np.asarray(geo["origin_um"]).ravel()),
        "hr_um": float(geo["hr_um"]),
        "factor": int(geo["factor"]),
        "shape_hr": tuple(int(v) for v in np.asarray(geo["shape_hr"]).ravel()),
    }
    tiles = meta.get("tiles")
    patch = geo.get("patch", tiles.get("patch_bins") if isinstance(tiles, dict) else None)
    if patch is not None:
        out["patch"] = int(np.asarray(patch).ravel()[0])
    return out


def load_prediction(pred: anndata.AnnData | str | os.PathLike[str]) -> PredictionGrid:
    """Read a ``diffst predict`` output (AnnData or ``.h5ad`` path) back onto its grid.

    Raises :class:`~diffst.io.sample.InputError` naming the file and the missing field.
    """
    import anndata as ad

    source = "prediction AnnData"
    if not isinstance(pred, ad.AnnData):
        source = str(pred)
        if not Path(pred).is_file():
            raise InputError(f"{source}: prediction file not found")
        pred = ad.read_h5ad(pred)
    geo = _geometry_from_uns(dict(pred.uns), source)
    for col in ("bin_row", "bin_col"):
        if col not in pred.obs:
            raise InputError(f"{source}: obs['{col}'] (HR grid index) is missing")
    rows = pred.obs["bin_row"].to_numpy(np.int64)
    cols = pred.obs["bin_col"].to_numpy(np.int64)
    h, w = geo["shape_hr"]
    if rows.size and (rows.min() < 0 or cols.min() < 0 or rows.max() >= h or cols.max() >= w):
        raise InputError(f"{source}: obs bin_row/bin_col fall outside the grid {h}×{w}")
    layers: dict[str, np.ndarray] = {"mean": _dense(pred.X)}
    for layer in (AnnDataKey.STD.value, AnnDataKey.Q05.value, AnnDataKey.Q95.value):
        if layer in pred.layers:
            layers[layer] = _dense(pred.layers[layer])
    grids: dict[str, np.ndarray] = {}
    for key, values in layers.items():
        grid = np.zeros((values.shape[1], h, w), dtype=np.float32)
        grid[:, rows, cols] = values.T
        grids[key] = grid
    tissue = np.zeros((h, w), dtype=bool)
    tissue[rows, cols] = True
    genes = tuple(str(g) for g in pred.var_names)
    return PredictionGrid(genes, grids, tissue, geo, source)


def _dense(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)


def _compare_geometry(
    pred: PredictionGrid, genes: tuple[str, ...], geo: dict[str, Any], truth_name: str
) -> np.ndarray:
    """Check prediction vs truth grids; return the truth grid's offset in prediction bins.

    The two grids may be anchored differently (e.g. image vs transcript extent) as long as
    they share the bin side and LR factor and their origins differ by a whole number of bins;
    the offset ``[row, col]`` (bins) maps truth-grid indices to prediction-grid indices.
    Otherwise a :class:`GeometryError` lists every difference.
    """
    problems = []
    if tuple(genes) != pred.genes:
        missing = [g for g in genes if g not in pred.genes]
        extra = [g for g in pred.genes if g not in genes]
        detail = f"missing in prediction {missing[:10]}, not in truth {extra[:10]}"
        if not missing and not extra:
            detail = "same genes in a different order"
        problems.append(f"genes differ ({len(pred.genes)} vs {len(genes)}): {detail}")
    pg = pred.geometry
    hr_um = float(geo["hr_um"])
    if not np.isclose(pg["hr_um"], hr_um):
        problems.append(f"HR bin side {pg['hr_um']} µm vs {hr_um} µm")
    if int(pg["factor"]) != int(geo["factor"]):
        problems.append(f"LR factor {pg['factor']} vs {geo['factor']}")
    shift = (np.asarray(geo["origin_um"], float) - np.asarray(pg["origin_um"], float)) / hr_um
    offset = np.rint(shift[::-1]).astype(np.int64)  # (x, y) → (row, col)
    if not np.allclose(shift[::-1], offset, atol=1e-3):
        problems.append(
            f"grid origins {tuple(pg['origin_um'])} µm vs {tuple(geo['origin_um'])} µm differ by "
            "a fraction of a bin"
        )
    if problems:
        raise GeometryError(
            f"prediction ({pred.source}) and truth ({truth_name}) do not match: "
            + "; ".join(problems)
        )
    return offset


def load_store_split(store: str | os.PathLike[str], split: str = "test") -> tuple[PatchSet, dict]:
    """Truth patches of one split of a prepared store (``docs/store_format.md``).

    Returns the :class:`PatchSet` and the store's geometry (``origin_um``, ``hr_um``,
    ``factor``, ``shape_hr``, ``patch``).
    """
    root = Path(store)
    manifest_path = root / StoreFile.MANIFEST
    if not manifest_path.is_file():
        raise InputError(f"{root}: not a prepared store ({StoreFile.MANIFEST} missing)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for key in ("genes", "geometry"):
        if key not in manifest:
            raise InputError(f"{manifest_path}: field '{key}' is missing")
    folder = root / split
    if not (folder / StoreFile.HR).is_file():
        raise InputError(f"{folder}: split '{split}' has no {StoreFile.HR}")
    geo = dict(manifest["geometry"])
    origin_um = np.load(folder / StoreFile.ORIGIN)
    hr_um = float(geo["hr_um"])
    offset = (origin_um - np.asarray(geo["origin_um"], dtype=np.float64)[None]) / hr_um
    origin_bins = np.rint(offset[:, ::-1]).astype(np.int64)  # (x, y) µm → (row, col) bins
    if not np.allclose(offset[:, ::-1], origin_bins, atol=1e-3):
        raise GeometryError(f"{folder / StoreFile.ORIGIN}: patch origins are not on the HR grid")
    hr = np.load(folder / StoreFile.HR, mmap_mode="r")
    geo.setdefault("patch", int(hr.shape[-1]))
    patches = PatchSet(
        hr=np.asarray(hr, dtype=np.float32),
        lr=np.load(folder / StoreFile.LR).astype(np.float32),
        mask=np.load(folder / StoreFile.MASK).astype(bool),
        lr_mask=np.load(folder / StoreFile.LR_MASK).astype(bool),
        origin_bins=origin_bins,
        genes=tuple(str(g) for g in manifest["genes"]),
        factor=int(geo["factor"]),
    )
    return patches, geo


def truth_from_sample(sample: SpatialSample, pred: PredictionGrid, patch: int) -> PatchSet:
    """Bin a sample's transcripts on the prediction's grid and cut it into ``patch`` tiles.

    Tiles are non-overlapping, start at LR-cell boundaries and keep only those holding
    predicted bins; the mask is the set of bins the prediction covers (its tissue).
    """
    from diffst.prepare.binning import GridGeometry, bin_transcripts, pool_grid

    if sample.transcripts is None:
        raise InputError(f"{sample.name}: truth sample has no transcripts to bin")
    g = pred.geometry
    geometry = GridGeometry(g["origin_um"], g["hr_um"], g["factor"], g["shape_hr"])
    genes = tuple(sample.genes)
    missing = [x for x in pred.genes if x not in genes]
    if missing:
        raise GeometryError(f"truth sample {sample.name} lacks predicted genes {missing[:10]}")
    hr = bin_transcripts(sample.transcripts, pred.genes, geometry).astype(np.float32)
    mask = pred.tissue
    factor = g["factor"]
    step = max(factor, (patch // factor) * factor)
    h, w = g["shape_hr"]
    tiles = [
        (r, c)
        for r in range(0, h, step)
        for c in range(0, w, step)
        if mask[r : r + step, c : c + step].any()
    ]
    if not tiles:
        raise GeometryError(f"truth sample {sample.name}: no predicted bin lies inside tissue")
    pad = ((0, 0), (0, step), (0, step))
    hr_p, mask_p = np.pad(hr, pad), np.pad(mask, pad[1:])
    cut = [
        (hr_p[:, r : r + step, c : c + step], mask_p[r : r + step, c : c + step]) for r, c in tiles
    ]
    hr_t = np.stack([x for x, _ in cut])
    lr_t = np.stack([pool_grid(x, factor) for x, _ in cut]).astype(np.float32)
    mask_t = np.stack([m for _, m in cut])
    lr_mask = np.stack([met.pool_sum(m[None].astype(float), factor)[0] > 0 for _, m in cut])
    return PatchSet(
        hr_t, lr_t, mask_t, lr_mask, np.asarray(tiles, dtype=np.int64), pred.genes, factor
    )


def prediction_patches(
    pred: PredictionGrid, truth: PatchSet, name: str = "diffst", description: str = ""
) -> MethodPrediction:
    """Cut the prediction's layers at the truth patches' origins → :class:`MethodPrediction`."""
    p = truth.hr.shape[-1]
    tissue = np.pad(pred.tissue, ((0, p), (0, p)))
    h, w = pred.tissue.shape
    uncovered = [
        i
        for i, (r, c) in enumerate(truth.origin_bins)
        if r < 0
        or c < 0
        or r >= h
        or c >= w
        or (truth.mask[i] & ~tissue[r : r + p, c : c + p]).any()
    ]
    if uncovered:
        raise GeometryError(
            f"prediction ({pred.source}) does not cover the in-tissue bins of truth patches "
            f"{uncovered[:10]} (of {len(truth.origin_bins)})"
        )
    out: dict[str, np.ndarray] = {}
    for key, grid in pred.layers.items():
        padded = np.pad(grid, ((0, 0), (0, p), (0, p)))
        out[key] = np.stack([padded[:, r : r + p, c : c + p] for r, c in truth.origin_bins])
    return MethodPrediction(
        name, out["mean"], out.get("std"), out.get("q05"), out.get("q95"), description=description
    )


@dataclass(frozen=True)
class EvaluationReport:
    """Result of :func:`evaluate`: scores per method and the files written."""

    scores: dict[str, MethodScores]
    truth: PatchSet
    files: dict[str, Path]

    def summary(self) -> Any:
        """``pandas.DataFrame`` with one row per (method, metric) (see ``metrics.csv``)."""
        from diffst.evaluate.report import summary_frame

        return summary_frame(list(self.scores.values()))


def baseline_predictions(truth: PatchSet, cfg: EvaluateConfig) -> list[MethodPrediction]:
    """The configured interpolation baselines on the truth patches' LR input."""
    from diffst.evaluate.baselines import interpolation_baseline

    p = truth.hr.shape[-1]
    out = []
    for name in cfg.baselines:
        mean = np.stack([interpolation_baseline(name, x, truth.factor, (p, p)) for x in truth.lr])
        out.append(MethodPrediction(name, mean, description=f"{name} upsampling of the LR map"))
    return out


def load_truth(
    truth: SpatialSample | str | os.PathLike[str],
    pred: PredictionGrid,
    cfg: EvaluateConfig,
    split: str = "test",
) -> PatchSet:
    """Truth patches from a sample, a store folder (+ ``split``) or a store split folder."""
    if isinstance(truth, SpatialSample):
        patch = cfg.patch_bins or int(pred.geometry.get("patch", 0))
        if patch < 1:
            raise ConfigError(
                f"{pred.source}: the model's patch size is not recorded; set the patch side "
                "(EvaluateConfig.patch_bins / --patch) to cut the truth into patches"
            )
        return truth_from_sample(truth, pred, patch)
    path = Path(truth)
    if (path / StoreFile.MANIFEST).is_file():
        store, name = path, split
    elif (path.parent / StoreFile.MANIFEST).is_file():
        store, name = path.parent, path.name
    else:
        from diffst.io import read_sample

        return load_truth(read_sample(path), pred, cfg, split)
    patches, geo = load_store_split(store, name)
    offset = _compare_geometry(pred, patches.genes, geo, f"{store} split {name}")
    return dataclasses.replace(patches, origin_bins=patches.origin_bins + offset[None])


def evaluate(
    pred: anndata.AnnData | str | os.PathLike[str],
    truth: SpatialSample | str | os.PathLike[str],
    cfg: EvaluateConfig | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = "evaluate_out",
    split: str = "test",
    extra: list[MethodPrediction] | None = None,
    title: str = "diffst evaluation",
    context: list[str] | None = None,
    notes: list[str] | None = None,
) -> EvaluationReport:
    """Score a ``diffst predict`` output against the measured truth and the baselines.

    Parameters
    ----------
    pred
        AnnData (or ``.h5ad`` path) written by :func:`diffst.predict.predict`.
    truth
        A :class:`SpatialSample` with transcripts (binned on the prediction's grid), a prepared
        store folder (its ``split`` is used) or a store split folder.
    cfg
        Evaluation options.
    out_dir
        Folder of the report (``None``: compute only, write nothing).
    split
        Store split used when ``truth`` is a store folder.
    extra
        Further methods scored on the same patches (e.g. the regression network).
    title, context, notes
        Report title, context lines and analysis paragraphs.

    Raises
    ------
    GeometryError
        Genes, grid or geometry of prediction and truth differ (every difference is listed).
    InputError
        Unreadable or incomplete prediction or truth.
    """
    from diffst.evaluate.report import write_report
    from diffst.evaluate.scoring import score_method

    cfg = cfg or EvaluateConfig()
    grid = load_prediction(pred)
    patches = load_truth(truth, grid, cfg, split)
    meta_note = "K samples → mean, std, q05, q95 (diffst predict)"
    methods = [prediction_patches(grid, patches, cfg.reference_method, meta_note)]
    methods += baseline_predictions(patches, cfg) + list(extra or [])
    scores = {m.name: score_method(m, patches, cfg) for m in methods}
    files: dict[str, Path] = {}
    if out_dir is not None:
        files = write_report(
            list(scores.values()),
            methods,
            patches,
            out_dir,
            cfg,
            title=title,
            context=context or [],
            notes=notes or [],
        )
    return EvaluationReport(scores, patches, files)
