"""Training speed and memory → the "train" section of BENCHMARKS.md.

Three modes:

``small``
    ``diffst train --preset small`` on the bundled MERFISH crop, prepared as in ``diffst demo``:
    throughput (patches/s, all steps after the first) and peak RSS of the whole process.

``step``
    One training step of a paper-shaped network on synthetic inputs (labelled synthetic),
    measured the way the official release was timed (``/work/shared/PEERS.md``): encode the
    condition, sample t, hybrid loss (Charbonnier + 0.01·disentangling + VB), backward, AdamW.
    Defaults are the paper configuration: 128 channels, HR 256, LR 26, G = 25, tissue view
    256 px, 16×16 cell tiles of 16 px, 3 image channels. Each (batch size) runs in a fresh
    subprocess so that the peak RSS belongs to that configuration alone. On a GPU
    (``--device cuda``) compare ``--amp none`` with ``--amp bf16`` and ``--compile``.

``sample``
    Ancestral DDPM sampling of one patch with the same paper-shaped network (``--sample-steps``,
    default 20 as the release was timed: "20-step sampling, 1 patch"), condition encoding included,
    untrained weights (speed does not depend on them). ``--batch 8`` samples 8 patches at once, as
    ``diffst predict`` draws K = 8 samples of a tile; ``--no-cpu-chunks``: in one UNet pass.

Examples
--------
``python benchmarks/bench_train.py small --steps 30``
``python benchmarks/bench_train.py step --batch 1 4 --repeats 3``
``python benchmarks/bench_train.py step --channels 64 --hr 128 --lr 13``
``python benchmarks/bench_train.py step --device cuda --amp bf16 --compile --batch 4 16``
``python benchmarks/bench_train.py step --channels 64 --hr 128 --lr 13 --profile`` (per-stage
forward times, backward and optimiser of the timed steps; ``--allocator default`` leaves glibc's
malloc thresholds as they are, to measure what :func:`diffst.allocator.tune_allocator` saves)
``python benchmarks/bench_train.py step --device cuda --compare --batch 4`` (side by side in one
run: plain fp32 eager, bf16 + channels_last, fp32 + compile, bf16 + compile; a table of patches/s,
speed-up over plain fp32 and peak memory follows the JSON lines)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path


def peak_rss_gib() -> float:
    """Peak resident set size of this process, GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_small(steps: int, threads: int) -> dict:
    """Prepare the bundled MERFISH crop like the demo and train ``small`` for ``steps`` steps."""
    import torch

    from diffst.datasets import merfish_mini
    from diffst.evaluation.demo import demo_configs
    from diffst.preparation.api import prepare
    from diffst.runs.config import resolve_run_config
    from diffst.training.loop import train

    torch.set_num_threads(threads)
    prepare_cfg, _ = demo_configs(False)
    with tempfile.TemporaryDirectory() as tmp:
        store = prepare(merfish_mini(), Path(tmp) / "store", prepare_cfg).path
        cfg = resolve_run_config(
            "small", None, [f"train.max_steps={steps}", "train.val_every=0", "train.log_every=1",
                            "train.device=cpu"],
        )  # fmt: skip
        train(store, Path(tmp) / "run", cfg, progress=False)
        rows = (Path(tmp) / "run" / "log.csv").read_text().splitlines()[1:]
    rates = [float(r.split(",")[8]) for r in rows[1:]]  # column patches_per_s, first step skipped
    return {
        "mode": "small",
        "steps": steps,
        "batch": cfg.train.batch_size,
        "patches_per_s_median": statistics.median(rates),
        "peak_rss_gib": peak_rss_gib(),
        "calib_conv_gflops": conv_calibration_gflops(threads),
    }


def conv_calibration_gflops(threads: int) -> float:
    """Achieved GFLOP/s of a plain 64→64 3×3 convolution forward + backward at 128×128.

    Recorded beside every CPU timing: on a shared machine it shows how much of the CPU the
    measurement actually got.
    """
    import torch

    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(1, 64, 128, 128, requires_grad=True)
    flop = 3 * 2 * 64 * 64 * 9 * 128 * 128  # forward + two backward convolutions
    conv(x).sum().backward()
    t0 = time.perf_counter()
    for _ in range(3):
        conv(x).sum().backward()
    return 3 * flop / (time.perf_counter() - t0) / 1e9


def _synthetic_batch(args: argparse.Namespace, batch: int, device: str) -> dict:
    import torch

    g = torch.Generator().manual_seed(0)
    n = args.cell_grid
    out = {
        "hr": torch.rand(batch, args.genes, args.hr, args.hr, generator=g) * 2 - 1,
        "lr": torch.rand(batch, args.genes, args.lr, args.lr, generator=g) * 2 - 1,
        "tissue": torch.rand(batch, 3, args.tissue, args.tissue, generator=g),
        "cells": torch.rand(batch, n * n, 3, args.tile, args.tile, generator=g),
        "cell_score": torch.rand(batch, n * n, generator=g) * 8,
        "mask": torch.ones(batch, 1, args.hr, args.hr),
    }
    return {k: v.to(device) for k, v in out.items()}


def _forward_gflop_per_patch(model, batch: dict) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    t = torch.full((1,), 500, dtype=torch.int64, device=batch["hr"].device)
    one = {k: v[:1] for k, v in batch.items()}
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        cond = model.encode_condition(one["lr"], one["tissue"], one["cells"], one["cell_score"])
        model(one["hr"], t, cond)
    return counter.get_total_flops() / 1e9


def _paper_model(args: argparse.Namespace) -> tuple:
    """The ``paper`` preset's run config, its network at the benchmark's shapes on
    ``args.device`` (torch threads set), and the noise schedule."""
    import dataclasses

    import torch

    from diffst.diffusion import NoiseSchedule
    from diffst.models import DiffSTModel, coexpression_adjacency
    from diffst.runs.config import resolve_run_config

    torch.set_num_threads(args.threads)
    cfg = resolve_run_config(args.preset)
    mcfg = dataclasses.replace(
        cfg.model, base_channels=args.channels, tissue_size=args.tissue,
        cell_grid=args.cell_grid, cell_tile_size=args.tile,
        gradient_checkpointing=args.gradient_checkpointing,
    )  # fmt: skip
    adjacency = coexpression_adjacency(totals=torch.arange(1.0, args.genes + 1))
    model = DiffSTModel(mcfg, args.genes, 3, args.lr, args.hr, adjacency).to(args.device)
    return cfg, model, NoiseSchedule.from_config(cfg.diffusion)


def run_step(args: argparse.Namespace, batch: int) -> dict:
    """Time ``args.repeats`` training steps (after warm-up steps) at one batch size.

    Wall time and process CPU time are both recorded: on a shared machine the wall time grows
    with the load average, the CPU time (summed over threads) much less.
    """
    import torch

    from diffst.allocator import tune_allocator
    from diffst.diffusion import training_losses
    from diffst.models import count_parameters
    from diffst.training.chunks import chunked_backward, resolve_unet_chunk

    tuned = tune_allocator() if args.allocator == "tuned" else False
    cfg, model, schedule = _paper_model(args)
    device = args.device
    chunk = resolve_unet_chunk(
        args.unet_chunk, model.cfg, args.hr, batch, torch.device(device), compiled=args.compile
    )
    model.set_training_progress(1.0)
    stages = _StageClock(model, device) if args.profile else None
    use_amp = args.amp == "bf16"  # bf16 autocast on CUDA and on CPUs (AVX512-BF16 / AMX)
    if use_amp and device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    data = _synthetic_batch(args, batch, device)
    gflop = _forward_gflop_per_patch(model, data)

    def step(seed: int) -> None:
        gen = torch.Generator(device).manual_seed(seed)
        amp = torch.autocast(device, dtype=torch.bfloat16) if use_amp else nullcontext()
        clock = stages.phase if stages is not None else (lambda name: nullcontext())
        if chunk < batch:  # as diffst train runs it: forward and backward chunk by chunk
            with amp, clock("forward+backward"):
                chunked_backward(
                    model, schedule, data["hr"], data["mask"], cfg.diffusion, chunk,
                    lr=data["lr"], tissue=data["tissue"], cells=data["cells"],
                    cell_score=data["cell_score"], generator=gen,
                )  # fmt: skip
        else:
            with amp:
                with clock("forward"):
                    cond = model.encode_condition(data["lr"], data["tissue"], data["cells"],
                                                  data["cell_score"])  # fmt: skip
                    terms = training_losses(model, schedule, data["hr"], cond, data["mask"],
                                            cfg.diffusion, gen)  # fmt: skip
            with clock("backward"):
                terms.total.float().backward()
        with clock("optimiser"):
            opt.step()
            opt.zero_grad(set_to_none=True)

    if args.compile:
        step = torch.compile(step)  # type: ignore[assignment]
    # torch.compile specialises on the first seed and recompiles once with a dynamic one:
    # three warm-up steps keep both compilations out of the timed steps
    warmup = 3 if args.compile else 1
    times, cpu = [], []
    minflt0 = 0
    for i in range(args.repeats + warmup):
        if device == "cuda":
            torch.cuda.synchronize()
        if i == warmup:
            minflt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            if stages is not None:
                stages.reset()
        t0, c0 = time.perf_counter(), time.process_time()
        step(i)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out = {
        "mode": "step", "preset": args.preset, "device": device, "amp": args.amp,
        "compile": args.compile, "gradient_checkpointing": args.gradient_checkpointing,
        "unet_chunk": chunk,
        "channels": args.channels, "hr": args.hr, "lr": args.lr, "genes": args.genes,
        "batch": batch, "params_m": count_parameters(model) / 1e6,
        "fwd_gflop_per_patch": gflop, "step_s_median": statistics.median(times[warmup:]),
        "step_s_all": times, "step_cpu_s_median": statistics.median(cpu[warmup:]),
        "warmup_steps": warmup,
        "load_avg_1min": os.getloadavg()[0],
        "patches_per_s": batch / statistics.median(times[warmup:]),
        "peak_rss_gib": peak_rss_gib(), "calib_conv_gflops": conv_calibration_gflops(args.threads),
        "allocator_tuned": tuned,
        "minor_faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - minflt0)
        / args.repeats,
    }  # fmt: skip
    if stages is not None:
        out["stage_s_per_step"] = stages.per_step(args.repeats)
    if device == "cuda":
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


class _StageClock:
    """Wall time per stage: forward time of each top-level part of the network (forward hooks;
    the mean pass and the denoiser are both the UNet), and the forward/backward/optimiser phases."""

    PARTS = ("histology", "lr_encoder", "fusion", "hr_image", "denoiser")

    def __init__(self, model, device: str) -> None:
        self.device, self.totals, self._open = device, {}, {}
        for name in self.PARTS:
            module = getattr(model, name, None)
            if module is not None:
                module.register_forward_pre_hook(lambda m, a, n=name: self._start(f"fwd:{n}"))
                module.register_forward_hook(lambda m, a, o, n=name: self._stop(f"fwd:{n}"))

    def _sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def _start(self, key: str) -> None:
        self._sync()
        self._open[key] = time.perf_counter()

    def _stop(self, key: str) -> None:
        self._sync()
        self.totals[key] = self.totals.get(key, 0.0) + time.perf_counter() - self._open.pop(key)

    def phase(self, name: str):
        from contextlib import contextmanager

        @contextmanager
        def clock():
            self._start(name)
            yield
            self._stop(name)

        return clock()

    def reset(self) -> None:
        self.totals = {}

    def per_step(self, steps: int) -> dict[str, float]:
        return {k: round(v / steps, 4) for k, v in sorted(self.totals.items())}


def run_sample(args: argparse.Namespace, batch: int) -> dict:
    """Time ancestral sampling of ``batch`` patch(es) with the paper-shaped network."""
    import torch

    from diffst.allocator import tune_allocator
    from diffst.diffusion import sample

    tuned = tune_allocator() if args.allocator == "tuned" else False
    if args.no_cpu_chunks:  # the whole batch in one UNet pass, as before CPU chunks existed
        import diffst.models.model as model_module

        model_module.CPU_CHUNK_BYTES = 1 << 62
    _, model, schedule = _paper_model(args)
    device = args.device
    model.eval()
    data = _synthetic_batch(args, batch, device)
    use_amp = args.amp == "bf16"

    def draw() -> None:
        amp = torch.autocast(device, dtype=torch.bfloat16) if use_amp else nullcontext()
        with torch.inference_mode(), amp:
            cond = model.encode_condition(data["lr"], data["tissue"], data["cells"],
                                          data["cell_score"])  # fmt: skip
            sample(model, schedule, cond, tuple(data["hr"].shape), sampler="ddpm",
                   steps=args.sample_steps, seeds=list(range(batch)), device=device)  # fmt: skip

    draw()  # warm-up
    times = []
    for _ in range(args.repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        draw()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    out = {
        "mode": "sample", "device": device, "amp": args.amp, "channels": args.channels,
        "hr": args.hr, "lr": args.lr, "genes": args.genes, "batch": batch,
        "sampler": "ddpm", "sample_steps": args.sample_steps,
        "cpu_chunks": not args.no_cpu_chunks,
        "sample_s_median": statistics.median(times), "sample_s_all": times,
        "allocator_tuned": tuned,
        "load_avg_1min": os.getloadavg()[0], "peak_rss_gib": peak_rss_gib(),
        "calib_conv_gflops": conv_calibration_gflops(args.threads),
    }  # fmt: skip
    if device == "cuda":
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("mode", choices=["small", "step", "sample"])
    p.add_argument("--sample-steps", type=int, default=20, help="sample: DDPM steps")
    p.add_argument("--steps", type=int, default=30, help="small: training steps")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="step: batch sizes")
    p.add_argument("--repeats", type=int, default=3, help="step: timed steps after 1 warm-up")
    p.add_argument("--channels", type=int, default=128, help="step: UNet base channels")
    p.add_argument("--hr", type=int, default=256, help="step: HR patch side (bins)")
    p.add_argument("--lr", type=int, default=26, help="step: LR side (cells)")
    p.add_argument("--genes", type=int, default=25)
    p.add_argument("--tissue", type=int, default=256, help="step: tissue view side (px)")
    p.add_argument("--cell-grid", type=int, default=16, help="step: cell tiles per side")
    p.add_argument("--tile", type=int, default=16, help="step: cell tile side (px)")
    p.add_argument(
        "--preset", default="paper",
        help="step, sample: the preset whose network (at the shapes above) and losses are used; "
        "paper_corrective adds the mean pass and HR image features",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", default="none", choices=["none", "bf16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--profile", action="store_true", help="step: time each stage of the step")
    p.add_argument(
        "--allocator", default="tuned", choices=["tuned", "default"],
        help="step: glibc malloc thresholds as diffst train sets them (tuned) or glibc's own",
    )  # fmt: skip
    p.add_argument(
        "--compare",
        action="store_true",
        help="step: run fp32, bf16, fp32+compile and bf16+compile side by side (ignores --amp, "
        "--compile) and print a table with the speed-up over plain fp32",
    )
    p.add_argument(
        "--gradient-checkpointing", action="store_true",
        help="step: model.gradient_checkpointing (the UNet's blocks, the image encoders and "
        "the fusion recomputed in backward: less activation memory, more compute)",
    )  # fmt: skip
    p.add_argument(
        "--unet-chunk", type=int, default=0,
        help="step: train.unet_chunk, patches per UNet pass (0: automatic, as diffst train "
        "resolves it; the batch size: one pass)",
    )  # fmt: skip
    p.add_argument(
        "--no-cpu-chunks", action="store_true",
        help="sample: one UNet pass over the whole batch (by default a CPU runs it in chunks of "
        "diffst.models.model.cpu_chunk_patches patches)",
    )  # fmt: skip
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; print one JSON line per measurement."""
    args = _parser().parse_args(argv)
    header = {"machine": platform.node(), "python": platform.python_version(),
              "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
              "command": " ".join(["python", *sys.argv])}  # fmt: skip
    if args.mode == "small":
        print(json.dumps({**header, **run_small(args.steps, args.threads)}), flush=True)
        return
    if args.mode == "sample" and args.compare:
        raise SystemExit("--compare is for the step mode")
    if args.child:
        run = run_sample if args.mode == "sample" else run_step
        print(json.dumps({**header, **run(args, args.batch[0])}), flush=True)
        return
    variants = (
        [("none", False), ("bf16", False), ("none", True), ("bf16", True)]
        if args.compare
        else [(args.amp, args.compile)]
    )
    drop = {"--batch", "--amp", "--compile", "--compare"} if args.compare else {"--batch"}
    rows = []
    for batch in args.batch:  # one subprocess per configuration: its own peak memory
        for amp, compiled in variants:
            argv_child = _without(list(argv or sys.argv[1:]), drop)
            if args.compare:
                argv_child += ["--amp", amp] + (["--compile"] if compiled else [])
            cmd = [sys.executable, __file__, *argv_child, "--batch", str(batch), "--child"]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            print(done.stdout, end="", flush=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.compare:
        print(_comparison_table(rows))


def _without(argv: list[str], options: set[str]) -> list[str]:
    """``argv`` minus each option in ``options`` and the values that follow it."""
    out, skip = [], False
    for a in argv:
        if a.startswith("--"):
            skip = a in options
        if not skip:
            out.append(a)
    return out


def _comparison_table(rows: list[dict]) -> str:
    """Markdown table of a ``--compare`` run: throughput relative to plain fp32 eager."""
    lines = [
        "| batch | arithmetic | compile | s / step | patches/s | × plain fp32 | peak memory GiB |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    base = {r["batch"]: r["patches_per_s"] for r in rows if r["amp"] == "none" and not r["compile"]}
    for r in rows:
        memory = r.get("peak_cuda_gib", r["peak_rss_gib"])
        speedup = r["patches_per_s"] / base[r["batch"]] if r["batch"] in base else float("nan")
        lines.append(
            f"| {r['batch']} | {'bf16 autocast' if r['amp'] == 'bf16' else 'fp32'} | "
            f"{'yes' if r['compile'] else 'no'} | {r['step_s_median']:.3f} | "
            f"{r['patches_per_s']:.2f} | {speedup:.2f} | {memory:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
