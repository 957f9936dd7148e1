"""Run the benchmark set behind ``make bench`` and write one dated Markdown report.

Each benchmark runs in its own subprocess (its own peak memory) with its JSON output collected:

* ``prepare``: streaming binning of 10^7 synthetic molecules (``bench_prepare.py``);
* ``train small``: ``diffst train --preset small`` on the bundled MERFISH crop (``bench_train.py
  small``);
* ``train step``: one training step of the reduced paper shape (64 channels, HR 128, LR 13) at
  batch 1 and 4, in fp32 and, where the CPU or GPU computes bf16 natively, with bf16 autocast;
* ``sample``: 20-step DDPM sampling of one reduced-shape patch.

``--full`` uses the paper shape (128 channels, HR 256, LR 26) for the step and sampling rows
(tens of minutes on 2 CPU cores). The report states the machine, its CPU's bf16 support, the
date and every command; copy the tables you want to keep into BENCHMARKS.md.

Usage::

    python benchmarks/run_all.py [--full] [--threads 2] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine_line() -> str:
    """Host, CPU model, core count and bf16 support, as every benchmark row must state."""
    import torch

    from diffst.precision import native_bf16

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    bf16 = "native bf16" if native_bf16("cpu") else "no native bf16 (fp32 fallback)"
    return (
        f"{platform.node()}: {cpu}, {os.cpu_count()} cores, {bf16}; Python "
        f"{platform.python_version()}, torch {torch.__version__}"
    )


def _run(script: str, args: list[str], threads: int) -> tuple[str, list[dict]]:
    cmd = [sys.executable, str(HERE / script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    rows = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    shown = f"OMP_NUM_THREADS={threads} python benchmarks/{script} {' '.join(args)}"
    return shown, rows


def plan(full: bool, threads: int, bf16: bool) -> list[tuple[str, str, list[str]]]:
    """(title, script, arguments) of every benchmark in the set."""
    shape = [] if full else ["--channels", "64", "--hr", "128", "--lr", "13"]
    t = ["--threads", str(threads)]
    steps = [("train step, fp32", "bench_train.py", ["step", *shape, "--batch", "1", "4", *t])]
    if bf16:
        steps.append(
            ("train step, bf16 autocast", "bench_train.py",
             ["step", *shape, "--batch", "1", "4", "--amp", "bf16", *t])
        )  # fmt: skip
    return [
        ("prepare (bin 10^7 molecules)", "bench_prepare.py",
         ["--sizes", "1e7", "--orders", "fov", "--stages", "bin", "--json-lines"]),
        ("train small (bundled MERFISH crop)", "bench_train.py", ["small", "--steps", "30", *t]),
        *steps,
        ("sample (20-step DDPM, 1 patch), fp32", "bench_train.py",
         ["sample", *shape, "--batch", "1", "--repeats", "2", *t]),
    ]  # fmt: skip


KEY_FIGURES = (
    ("batch", "batch", "{}"),
    ("amp", "arithmetic", "{}"),
    ("per_s", "M molecules/s", "{:.1f}", 1e-6),
    ("patches_per_s_median", "patches/s", "{:.1f}"),
    ("patches_per_s", "patches/s", "{:.2f}"),
    ("step_s_median", "s / step", "{:.3f}"),
    ("sample_s_median", "s / sample", "{:.2f}"),
    ("peak_rss_gib", "peak RSS GiB", "{:.2f}"),
    ("peak_rss_gb", "peak RSS GB", "{:.2f}"),
    ("calib_conv_gflops", "calibration GFLOP/s", "{:.0f}"),
)


def summary_table(rows: list[dict]) -> list[str]:
    """A Markdown table of the figures a reader looks for, one line per measurement."""
    cols = [c for c in KEY_FIGURES if any(c[0] in r for r in rows)]
    out = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---:|" * len(cols)]
    for r in rows:
        cells = []
        for key, _, fmt, *scale in cols:
            v = r.get(key)
            cells.append("–" if v is None else fmt.format(v * scale[0] if scale else v))
        out.append("| " + " | ".join(cells) + " |")
    return out


def main(argv: list[str] | None = None) -> Path:
    """Run every benchmark, write ``<out>/<UTC date-time>.md``, print and return its path."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="paper-shaped step and sampling rows")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    from diffst.precision import native_bf16

    when = dt.datetime.now(dt.UTC)
    lines = [
        f"# diffst benchmarks, {when:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine_line()}.",
        "",
    ]
    for title, script, bench_args in plan(args.full, args.threads, native_bf16("cpu")):
        print(f"[run_all] {title} ...", flush=True)
        shown, rows = _run(script, bench_args, args.threads)
        lines += [f"## {title}", "", f"`{shown}`", "", *summary_table(rows), "", "```"]
        lines += [json.dumps(r, sort_keys=True) for r in rows]
        lines += ["```", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{when:%Y%m%dT%H%M}.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)
    print(f"[run_all] report: {path}")
    return path


if __name__ == "__main__":
    main()
