"""Benchmark of the streaming binning behind ``diffst prepare`` (synthetic transcripts).

Streams ``N`` synthetic molecules (300 genes, Zipf-like frequencies, 25-gene panel) in chunks
through :func:`diffst.sections.binning.bin_transcripts` (stage ``bin``) or through the streaming
passes of ``prepare`` (stage ``prepare``: gene-total scan, panel binning + all-gene tissue
density) onto a 7.5 × 10 mm section at 4.25 µm, then pools 10×10. Molecule generation is
excluded from the binning time; peak RSS is the whole process (one fresh subprocess per size).
Two file orders:

* ``fov``: molecules emitted field of view by field of view (400 µm tiles), as instrument
  output files are ordered;
* ``random``: uniformly shuffled (worst case for memory locality).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_prepare.py --sizes 1e6 1e7 1e8 --append BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffst.io.sample import TranscriptChunk
from diffst.sections.binning import (
    GridGeometry,
    SparseCounts,
    bin_transcripts,
    bin_transcripts_sparse,
    bin_transcripts_with_stats,
    pool_counts,
    scan_transcripts,
)

N_GENES = 300
PANEL = 25
WIDTH_UM, HEIGHT_UM = 10_000.0, 7_500.0
FOV_UM = 400.0
CHUNK = 1_000_000


@dataclass
class SyntheticStream:
    """A transcript source that generates its chunks on the fly and times the generation."""

    n: int
    order: str
    seed: int = 0
    n_genes: int = N_GENES
    genes: tuple[str, ...] = ()
    control: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    path: Path | None = None
    gen_seconds: float = 0.0
    gen_cpu: float = 0.0

    def __post_init__(self) -> None:
        self.genes = tuple(f"g{k}" for k in range(self.n_genes))
        self.control = np.zeros(self.n_genes, dtype=bool)

    def iter_chunks(self) -> Iterator[TranscriptChunk]:
        rng = np.random.default_rng(self.seed)
        p = 1.0 / (np.arange(self.n_genes) + 10.0)
        cdf = np.cumsum(p / p.sum())
        nfx, nfy = int(WIDTH_UM // FOV_UM), int(HEIGHT_UM // FOV_UM)
        per_fov = self.n / (nfx * nfy)
        done = 0
        while done < self.n:
            t0, c0 = time.perf_counter(), time.process_time()
            m = min(CHUNK, self.n - done)
            gene = np.searchsorted(cdf, rng.random(m)).astype(np.int32)
            if self.order == "fov":
                fov = ((done + np.arange(m)) // per_fov).astype(np.int64)
                x = (fov % nfx + rng.random(m)) * FOV_UM
                y = (fov // nfx + rng.random(m)) * FOV_UM
            else:
                x = rng.random(m) * WIDTH_UM
                y = rng.random(m) * HEIGHT_UM
            done += m
            self.gen_seconds += time.perf_counter() - t0
            self.gen_cpu += time.process_time() - c0
            yield TranscriptChunk(x, y, gene)


def run_one(n: int, order: str, stage: str, panel_size: int = PANEL) -> dict[str, Any]:
    """Bin ``n`` molecules in this process; returns timings and peak RSS.

    ``stage="bin"``: :func:`bin_transcripts` alone; ``"prepare"``: the streaming passes of
    ``prepare`` (gene-total scan, then panel binning plus the all-gene tissue density);
    ``"sparse"``: those passes into the sparse HR map of ``prepare.hr_storage=sparse``
    (:func:`bin_transcripts_sparse`), for panels whose dense map would not fit.
    """
    src = SyntheticStream(n, order, n_genes=max(N_GENES, panel_size))
    geo = GridGeometry.covering((0.0, 0.0, WIDTH_UM, HEIGHT_UM), 4.25, 10)
    panel = src.genes[:panel_size]
    t0, c0 = time.perf_counter(), time.process_time()
    if stage == "prepare":
        scan_transcripts(src)
        hr = bin_transcripts_with_stats(src, panel, geo, density=True)[0]
    elif stage == "sparse":
        scan_transcripts(src)
        hr = bin_transcripts_sparse(src, panel, geo, density=True)[0]
    else:
        hr = bin_transcripts(src, panel, geo)
    t1 = time.perf_counter()
    lr = pool_counts(hr, 10)
    t2, c2 = time.perf_counter(), time.process_time()
    total = int(hr.matrix.sum()) if isinstance(hr, SparseCounts) else int(hr.sum())
    assert int(lr.sum()) == total
    binning = (t1 - t0) - src.gen_seconds
    cpu = (c2 - c0) - src.gen_cpu
    return {
        "n": n,
        "panel_share": total / n,
        "bin_s": binning,
        "pool_s": t2 - t1,
        "per_s": n / (binning + (t2 - t1)),
        "per_cpu_s": n / cpu,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "grid": f"{panel_size}×{geo.shape_hr[0]}×{geo.shape_hr[1]}",
        "dense_hr_gib": 4 * panel_size * geo.shape_hr[0] * geo.shape_hr[1] / 2**30,
        "hr_gib": hr.nbytes / 2**30,
    }


def machine() -> str:
    """nproc and CPU model."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    py = platform.python_version()
    return f"{os.cpu_count()} CPUs ({model}), Python {py}, numpy {np.__version__}"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7])
    ap.add_argument("--orders", nargs="+", default=["fov", "random"], choices=["fov", "random"])
    ap.add_argument("--stages", nargs="+", default=["bin"], choices=["bin", "prepare", "sparse"])
    ap.add_argument("--panel", type=int, default=PANEL, help="genes binned (default 25)")
    ap.add_argument("--append", help="append a Markdown table to this file")
    ap.add_argument("--json-lines", action="store_true", help="also print each row as JSON")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    return ap


def main() -> None:
    args = _parser().parse_args()
    if args.one:
        print(json.dumps(run_one(int(float(args.one[0])), args.one[1], args.one[2], args.panel)))
        return
    rows = []
    for stage in args.stages:
        for order in args.orders:
            for n in args.sizes:
                rows.append(_measure(n, order, stage, args.panel))
                if args.json_lines:
                    print(json.dumps(rows[-1]), flush=True)
    if args.append:
        append_table(args.append, rows, " ".join(sys.argv))


def _measure(n: float, order: str, stage: str, panel: int = PANEL) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(n), order, stage, "--panel", str(panel)],
        check=True,
        capture_output=True,
        text=True,
    )
    res = json.loads(out.stdout)
    res.update(order=order, stage=stage)
    print(
        f"{stage:7s} {order:6s} n={int(n):>11,d}  {res['per_s'] / 1e6:6.1f} M molecules/s wall  "
        f"{res['per_cpu_s'] / 1e6:6.1f} M/s CPU  bin {res['bin_s']:.2f} s  "
        f"pool {res['pool_s']:.2f} s  peak RSS {res['peak_rss_gb']:.2f} GB  "
        f"panel {res['panel_share']:.0%}  HR map {res['hr_gib']:.2f} GiB "
        f"(dense {res['dense_hr_gib']:.2f} GiB)"
    )
    return res


def append_table(path: str, rows: list[dict], command: str) -> None:
    """Append the results as a Markdown table with machine, date and command."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "",
        f"### Streaming binning (bin_transcripts, prepare's passes) + pool_grid, {when}",
        "",
        f"Machine: {machine()}. Command: `OMP_NUM_THREADS=1 python {command}`.",
        f"Grid {rows[0]['grid']} (7.5 × 10 mm at 4.25 µm), chunks of {CHUNK:,} molecules; "
        "generation time excluded, peak RSS of the whole process; CPU = process CPU time "
        "(less sensitive to other jobs sharing the 2 cores). Times include the fixed cost of "
        "allocating and pooling the section grid (dominant below 10^7 molecules).",
        "",
        "| stage | order | molecules | panel share | M molecules/s (wall) "
        "| M molecules/s (CPU) | bin s | pool s | HR map GiB (dense would be) | peak RSS GB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['order']} | {int(r['n']):,} | {r['panel_share']:.0%} "
            f"| {r['per_s'] / 1e6:.1f} | {r['per_cpu_s'] / 1e6:.1f} "
            f"| {r['bin_s']:.2f} | {r['pool_s']:.2f} "
            f"| {r['hr_gib']:.2f} ({r['dense_hr_gib']:.2f}) | {r['peak_rss_gb']:.2f} |"
        )
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
