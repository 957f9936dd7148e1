"""Benchmark of ``diffst predict``: accuracy against network evaluations, speed and memory.

Accuracy: one sample per validation patch of a prepared store, drawn by each sampler at each
step count (and by ancestral DDPM over all ``T`` training steps), mapped to counts with the store's
normalisation. Per gene the PCC is taken over the in-mask HR bins of all patches pooled; the
table reports the mean over genes, with bicubic upsampling of the LR map as a reference.

Speed: :func:`diffst.inference.predict` on a whole section (K samples per tile, overlap and
blending included, writing the h5ad); seconds per tile and per mm² of tissue, peak RSS of the
process and, on CUDA, peak allocated GPU memory. The speed run goes first so the RSS peak
is its own.

Usage (CPU)::

    OMP_NUM_THREADS=2 python benchmarks/bench_predict.py --store STORE --checkpoint RUN \\
        --section merfish_mini --device cpu

GPU mode: the same command with ``--device cuda`` (e.g. ``--max-patches 64 --speed-samples 8
--speed-steps 20`` for the issue's targets); ``torch.backends.cudnn.benchmark`` is left off so
results are reproducible.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffst.baselines import bicubic_upsample
from diffst.data.dataset import PatchDataset
from diffst.data.transforms import NormStats, inverse_normalise
from diffst.diffusion import count_network_evaluations, sample
from diffst.keys import BatchKey
from diffst.metrics import pearson_per_gene
from diffst.runs.checkpoint import InferenceBundle, load_for_inference

SAMPLERS = ("ddpm", "ddim", "dpmpp")


def _batches(ds: PatchDataset, n: int, size: int, device: torch.device) -> list[dict[str, Any]]:
    out = []
    for start in range(0, n, size):
        items = [ds[i] for i in range(start, min(n, start + size))]
        out.append({k: torch.stack([it[k] for it in items]).to(device) for k in items[0]})
    return out


def _pcc(preds: list[np.ndarray], truth: np.ndarray, mask: np.ndarray) -> float:
    pcc = pearson_per_gene(np.concatenate(preds, -1), truth, mask)
    return float(np.nanmean(pcc)) if np.isfinite(pcc).any() else float("nan")


@torch.no_grad()
def accuracy(
    bundle: InferenceBundle, store: Path, split: str, max_patches: int, steps: list[int],
    full_ddpm: bool, device: torch.device,
) -> list[dict[str, Any]]:  # fmt: skip
    """PCC (count scale) per sampler and step count on the store's ``split``."""
    ds = PatchDataset(store, split)
    n = min(len(ds), max_patches)
    if n == 0:
        raise SystemExit(f"{store}: split {split!r} is empty")
    batches = _batches(ds, n, 8, device)
    norm = NormStats.from_dict(bundle.store_meta["normalisation"])
    factor = int(bundle.store_meta["geometry"]["factor"])
    truth = np.concatenate([b[BatchKey.HR_COUNTS].cpu().numpy() for b in batches], 0)
    mask = np.concatenate([b[BatchKey.MASK][:, 0].cpu().numpy() > 0 for b in batches], 0)
    truth_g, mask_g = np.concatenate(list(truth), -1), np.concatenate(list(mask), -1)
    bicubic = [
        bicubic_upsample(x, factor, truth.shape[-2:])
        for b in batches
        for x in b[BatchKey.LR_COUNTS].cpu().numpy()
    ]
    rows = [{"sampler": "bicubic LR", "steps": 0, "nfe": 0, "pcc": _pcc(bicubic, truth_g, mask_g),
             "seconds": 0.0}]  # fmt: skip
    runs = [(s, k) for s in SAMPLERS for k in steps]
    if full_ddpm:
        runs.append(("ddpm", int(bundle.schedule.num_steps)))
    conds = [
        bundle.model.encode_condition(
            b[BatchKey.LR], b[BatchKey.TISSUE], b[BatchKey.CELLS], b[BatchKey.CELL_SCORE]
        )
        for b in batches
    ]
    for sampler, k in runs:
        preds, t0, first = [], time.perf_counter(), 0
        for b, cond in zip(batches, conds, strict=True):
            shape = tuple(b[BatchKey.HR].shape)
            x0 = sample(
                bundle.model, bundle.schedule, cond, shape, sampler=sampler, steps=k,
                seeds=list(range(first, first + shape[0])), device=device,
                clip_denoised=bundle.config.diffusion.clip_denoised,
            )  # fmt: skip
            first += shape[0]
            preds += list(inverse_normalise(x0.float(), norm).cpu().numpy())
        rows.append({
            "sampler": sampler, "steps": k, "nfe": count_network_evaluations(sampler, k),
            "pcc": _pcc(preds, truth_g, mask_g), "seconds": time.perf_counter() - t0,
        })  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def speed(args: argparse.Namespace) -> dict[str, Any]:
    """Whole-section :func:`predict` timing, tiles, tissue area and peak memory."""
    from diffst.api import read
    from diffst.inference.api import predict
    from diffst.inference.config import PredictConfig

    section = read(args.section)
    cfg = PredictConfig(
        sampler=args.speed_sampler, steps=args.speed_steps, n_samples=args.speed_samples,
        batch_size=args.batch_size, device=args.device, n_figure_genes=0,
    )  # fmt: skip
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        adata = predict(args.checkpoint, section, Path(tmp) / "bench.h5ad", cfg)
        seconds = time.perf_counter() - t0
    assert adata is not None
    meta = adata.uns["diffst"]
    hr_um = float(meta["geometry"]["hr_um"])
    area_mm2 = adata.n_obs * hr_um**2 / 1e6
    n_tiles = int(meta["tiles"]["n"])
    out = {
        "section": args.section, "bins": adata.n_obs, "genes": adata.n_vars, "tiles": n_tiles,
        "tissue_mm2": area_mm2, "seconds": seconds, "s_per_tile": seconds / max(n_tiles, 1),
        "s_per_mm2": seconds / area_mm2, "peak_rss_gib": resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "sampler": cfg.sampler, "steps": cfg.steps, "samples": cfg.n_samples,
    }  # fmt: skip
    if args.device.startswith("cuda"):
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", type=Path, default=None, help="prepared store (validation split)")
    p.add_argument("--checkpoint", required=True, help="checkpoint .pt or run folder")
    p.add_argument("--split", default="val")
    p.add_argument("--max-patches", type=int, default=16)
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
    p.add_argument("--no-full-ddpm", action="store_true", help="skip the T-step DDPM row")
    p.add_argument("--no-accuracy", action="store_true", help="speed run only")
    p.add_argument("--section", default=None, help="section path/dataset for the speed run")
    p.add_argument("--speed-sampler", default="dpmpp", choices=SAMPLERS)
    p.add_argument("--speed-steps", type=int, default=10)
    p.add_argument("--speed-samples", type=int, default=8)
    p.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="tiles per batch (speed run; 0: automatic, as diffst predict)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    torch.manual_seed(0)
    result: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "device": args.device if not args.device.startswith("cuda")
        else torch.cuda.get_device_name(),
        "command": " ".join(sys.argv),
    }  # fmt: skip
    if args.section:
        result["speed"] = speed(args)
        print(json.dumps(result["speed"]), file=sys.stderr, flush=True)
    if args.no_accuracy:
        print(json.dumps(result, indent=1))
        return
    if args.store is None:
        p.error("--store is needed for the accuracy table (or pass --no-accuracy)")
    bundle = load_for_inference(args.checkpoint, args.device)
    result["checkpoint_step"] = bundle.step
    result["accuracy"] = accuracy(
        bundle, args.store, args.split, args.max_patches, args.steps, not args.no_full_ddpm,
        torch.device(args.device),
    )  # fmt: skip
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
