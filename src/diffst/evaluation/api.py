"""``evaluate(pred, truth, cfg)``: score a ``diffst predict`` output against measured truth.

The prediction (AnnData or ``.h5ad``) is put back on its section grid; the truth is either a
:class:`~diffst.io.sample.SpatialSample` (binned on the prediction's grid) or a split of a
prepared store, stitched into one held-out :class:`~diffst.evaluation.region.Region` on the
section's own LR grid. The prediction is cut to that region, the interpolation baselines are
computed from the same LR grid, every method is scored on the same bins by
:func:`diffst.evaluation.scoring.score_all`, and
:func:`diffst.evaluation.report.write_report` writes tables and figures.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffst import metrics as met
from diffst.config import ConfigError
from diffst.evaluation.config import EvaluateConfig
from diffst.evaluation.region import LRContext, PatchSet, Region, region_from_patches
from diffst.evaluation.scoring import MethodPrediction, MethodScores
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
    "prediction_on_region",
    "store_lr_context",
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
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)  # n_samples, ...


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
    meta = pred.uns.get(AnnDataKey.UNS.value, {})
    info = {
        k: meta[k] for k in ("n_samples", "mean_estimator") if isinstance(meta, dict) and k in meta
    }
    return PredictionGrid(genes, grids, tissue, geo, source, info)


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
    units = _lr_units(folder, geo, hr.shape)
    patches = PatchSet(
        hr=np.asarray(hr, dtype=np.float32),
        lr=np.load(folder / StoreFile.LR).astype(np.float32),
        mask=np.load(folder / StoreFile.MASK).astype(bool),
        lr_mask=np.load(folder / StoreFile.LR_MASK).astype(bool),
        origin_bins=origin_bins,
        genes=tuple(str(g) for g in manifest["genes"]),
        factor=int(geo["factor"]),
        lr_units=units,
    )
    return patches, geo


def _lr_units(folder: Path, geo: dict[str, Any], hr_shape: tuple[int, ...]) -> np.ndarray | None:
    """Measured HR units per LR cell: the measured spots of pooled spot blocks, the pseudo-spot's
    area in bins for Visium-lattice LR, else ``None`` (every bin of the cell)."""
    spots_file = folder / "lr_spots.npy"
    if spots_file.is_file():
        return np.load(spots_file).astype(np.float64)
    if geo.get("lr_mode") == "visium" and "lr_bins" in geo:
        n, p = hr_shape[0], -(-int(hr_shape[-1]) // int(geo["factor"]))
        return np.full((n, p, p), float(geo["lr_bins"]))
    return None


def store_lr_context(store: str | os.PathLike[str], split: str = "test") -> LRContext | None:
    """The section's LR grid around a split's region, rebuilt from every patch of the store.

    HR counts are exact in every patch, so stitching all splits' patches of the section and
    pooling them on the section's LR grid gives the LR cells the interpolation baselines may read
    around the held-out region. Cells not entirely covered by patches are left unmeasured.
    Returns ``None`` for stores whose LR is not pooled HR (Visium-lattice pseudo-spots) or that
    hold several sections.
    """
    root = Path(store)
    manifest = json.loads((root / StoreFile.MANIFEST).read_text(encoding="utf-8"))
    geo = manifest["geometry"]
    if geo.get("lr_mode", "grid") == "visium" or (root / split / "section.npy").is_file():
        return None
    f, hr_um = int(geo["factor"]), float(geo["hr_um"])
    parts = []
    for name in ("train", "val", "test"):
        folder = root / name
        if not (folder / StoreFile.HR).is_file():
            continue
        origin = np.load(folder / StoreFile.ORIGIN)
        rc = np.rint((origin - np.asarray(geo["origin_um"])[None]) / hr_um)[:, ::-1].astype(int)
        parts.append((folder, rc))
    if not parts:
        return None
    p = int(np.load(parts[0][0] / StoreFile.HR, mmap_mode="r").shape[-1])
    h = max(int(rc[:, 0].max()) for _, rc in parts if len(rc)) + p
    w = max(int(rc[:, 1].max()) for _, rc in parts if len(rc)) + p
    g = len(manifest["genes"])
    hr = np.zeros((g, h, w), dtype=np.float64)
    known = np.zeros((h, w), dtype=bool)
    measured = np.zeros((h, w), dtype=bool)
    for folder, rc in parts:
        arr = np.load(folder / StoreFile.HR, mmap_mode="r")
        mask = np.load(folder / StoreFile.MASK, mmap_mode="r")
        for i, (r, c) in enumerate(rc):
            hr[:, r : r + p, c : c + p] = arr[i]
            known[r : r + p, c : c + p] = True
            measured[r : r + p, c : c + p] |= mask[i].astype(bool)
    spots = (root / split / "lr_spots.npy").is_file()
    units_map = measured if spots else known  # spots: measured spots; grid: every bin
    lr = met.pool_sum(hr, f)
    units = met.pool_sum(units_map[None].astype(np.float64), f)[0]
    complete = (
        met.pool_sum(known[None].astype(np.float64), f)[0] == met.pool_sum(np.ones((1, h, w)), f)[0]
    )
    cell_mask = complete & (met.pool_sum(measured[None].astype(np.float64), f)[0] > 0)
    return LRContext(lr.astype(np.float32), cell_mask, np.where(cell_mask, units, 0.0))


def truth_from_sample(
    sample: SpatialSample, pred: PredictionGrid, patch: int
) -> tuple[PatchSet, LRContext]:
    """Bin a sample's transcripts on the prediction's grid and cut it into ``patch`` tiles.

    Tiles are non-overlapping, start at LR-cell boundaries and keep only those holding
    predicted bins; the mask is the set of bins the prediction covers (its tissue). The whole
    section's LR grid is returned as the baselines' context.
    """
    from diffst.sections.binning import GridGeometry, bin_transcripts, pool_grid

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
    patches = PatchSet(
        hr_t, lr_t, mask_t, lr_mask, np.asarray(tiles, dtype=np.int64), pred.genes, factor
    )
    units = met.pool_sum(np.ones((1, h, w)), factor)[0]
    cells = met.pool_sum(mask[None].astype(np.float64), factor)[0] > 0
    context = LRContext(pool_grid(hr, factor).astype(np.float32), cells, units)
    return patches, context


def prediction_on_region(
    pred: PredictionGrid,
    region: Region,
    name: str = "diffst",
    description: str = "",
    offset: np.ndarray | tuple[int, int] = (0, 0),
) -> MethodPrediction:
    """Cut the prediction's layers to the region's box → :class:`MethodPrediction`.

    ``offset`` maps the region's section grid onto the prediction's (prediction index = region
    index + offset). Raises :class:`GeometryError` when a scored bin is not predicted.
    """
    tissue = region.cut(pred.tissue[None].astype(np.float32), tuple(offset))[0] > 0
    missing = region.scored & ~tissue
    if missing.any():
        raise GeometryError(
            f"prediction ({pred.source}) does not cover {int(missing.sum())} of the "
            f"{int(region.scored.sum())} scored bins of the held-out region"
        )
    out = {key: region.cut(grid, tuple(offset)) for key, grid in pred.layers.items()}
    n_samples = pred.metadata.get("n_samples") if pred.metadata else None
    return MethodPrediction(
        name, out["mean"], out.get("std"), out.get("q05"), out.get("q95"),
        description=description, n_samples=int(n_samples) if n_samples else None,
    )  # fmt: skip


@dataclass(frozen=True)
class EvaluationReport:
    """Result of :func:`evaluate`: scores per method and the files written."""

    scores: dict[str, MethodScores]
    region: Region
    files: dict[str, Path]

    def summary(self) -> Any:
        """``pandas.DataFrame`` with one row per (method, metric) (see ``metrics.csv``)."""
        from diffst.evaluation.report import summary_frame

        return summary_frame(list(self.scores.values()))


def baseline_predictions(region: Region, cfg: EvaluateConfig) -> list[MethodPrediction]:
    """The configured interpolation baselines from the region's LR grid (and its context).

    Each LR cell's counts are spread as the mean over its measured HR units (partly measured
    cells are not diluted; unmeasured cells take the nearest measured cell's mean), then
    upsampled; the map is cut to the region's box.
    """
    from diffst.baselines import interpolation_baseline

    lr, mask, units, (a, b) = region.baseline_input()
    f = region.factor
    h, w = region.shape
    out = []
    for name in cfg.baselines:
        full = interpolation_baseline(name, lr, f, units=units, lr_mask=mask)
        padded = np.pad(full, ((0, 0), (0, h), (0, w)))
        mean = padded[:, a * f : a * f + h, b * f : b * f + w].astype(np.float32)
        out.append(
            MethodPrediction(
                name, mean, description=f"{name} upsampling of the LR cells' measured-unit means"
            )
        )
    return out


def load_truth(
    truth: SpatialSample | str | os.PathLike[str],
    pred: PredictionGrid,
    cfg: EvaluateConfig,
    split: str = "test",
) -> tuple[PatchSet, np.ndarray, LRContext | None]:
    """Truth patches from a sample, a store folder (+ ``split``) or a store split folder.

    Returns the patches (in the truth's own section grid), the offset ``[row, col]`` from that
    grid to the prediction's and the LR cells around them for the baselines (or ``None``).
    """
    if isinstance(truth, SpatialSample):
        patch = cfg.patch_bins or int(pred.geometry.get("patch", 0))
        if patch < 1:
            raise ConfigError(
                f"{pred.source}: the model's patch size is not recorded; set the patch side "
                "(EvaluateConfig.patch_bins / --patch) to cut the truth into patches"
            )
        patches, context = truth_from_sample(truth, pred, patch)
        return patches, np.zeros(2, dtype=np.int64), context
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
    return patches, offset, store_lr_context(store, name)


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
        AnnData (or ``.h5ad`` path) written by :func:`diffst.inference.predict`.
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
    from diffst.evaluation.report import write_report
    from diffst.evaluation.scoring import score_all

    cfg = cfg or EvaluateConfig()
    grid = load_prediction(pred)
    patches, offset, lr_context = load_truth(truth, grid, cfg, split)
    region = region_from_patches(patches, context=lr_context)
    meta_note = "K samples → mean, std, q05, q95 (diffst predict)"
    methods = [prediction_on_region(grid, region, cfg.reference_method, meta_note, offset)]
    methods += baseline_predictions(region, cfg) + list(extra or [])
    scores = {s.name: s for s in score_all(methods, region, cfg)}
    files: dict[str, Path] = {}
    if out_dir is not None:
        files = write_report(
            list(scores.values()),
            methods,
            region,
            out_dir,
            cfg,
            title=title,
            context=context or [],
            notes=notes or [],
        )
    return EvaluationReport(scores, region, files)
