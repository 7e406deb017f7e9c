"""The benchmark suite: gpcore's fast path against a plain eager fp32 loop, side by side.

    python -m benchmarks.run --device cpu|cuda [--quick] [--out benchmarks/results]
        [--cpu-size 128] [--models gp_unet,...] [--variants eager,fast] [--compile]
        [--no-readme]

In one process and one run, for each GP model in its paper configuration
(``gpcore.models.create_model(name)``):

* training throughput (slices/s; forward, class-weighted cross-entropy, backward, Adam) at
  batch 8 and 32;
* inference latency (batch 1) and throughput (batch 32) of ``forward_with_heatmap``;
* achieved FLOP/s as a fraction of the machine's matmul peak, measured in the same run
  (``torch.mm``, fp32 and bf16); FLOPs from ``torch.utils.flop_counter`` over forward +
  backward;
* peak memory (CUDA: ``max_memory_allocated``; CPU: rise of the resident set, VmHWM);

and the data path: random reads from a small synthetic slice store, and the fraction of a
short training loop spent waiting for the DataLoader.

Variants: ``eager`` is NCHW fp32, no autocast, no compile, non-fused Adam, ``torch.no_grad``
for inference. ``fast`` is what ``gpcore/configs/train.yaml``'s ``"auto"`` switches resolve to on the
device (``gpcore.training.fast.FastPaths.auto``; plus ``torch.compile`` with ``--compile``), with
``torch.inference_mode`` for inference. Other variants: ``+``-joined switches, e.g.
``channels_last``, ``bf16``, ``channels_last+bf16``. Every ratio is against ``eager`` of the same
model and batch.

CUDA runs at the paper's 4 × 240 × 240. On CPU the default is a reduced configuration
(``--cpu-size 128``, 1-2 timed steps; stated in the output) so that the whole run takes under
10 minutes on 2 cores. Writes ``OUT/bench_<device>_<date>.csv`` (one row per measurement) and
appends a Markdown table to ``benchmarks/README.md``.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from gpcore.study.efficiency import (CLASS_WEIGHTS, build, environment, forward_flops,
                               make_optimiser, matmul_peak, sync, time_inference,
                               time_training, training_flops)
from gpcore.training.fast import SWITCHES, FastPaths

MODELS = ("gp_unet", "gp_shuffle_unet", "gp_recon_resnet")
README = Path(__file__).with_name("README.md")
MiB = 2 ** 20


@dataclass
class Plan:
    """How much to measure: sizes, batch sizes, repetitions, per-measurement time caps."""

    size: int
    train_batches: tuple[int, ...] = (8, 32)
    train_steps: int = 10          # timed steps at batch <= 8
    train_steps_large: int = 10    # timed steps at larger batches
    train_warmup: int = 3
    train_warmup_large: int = 3
    infer_batches: tuple[int, ...] = (1, 32)
    infer_reps: int = 20
    infer_reps_large: int = 10
    infer_warmup: int = 3
    infer_warmup_large: int = 3
    max_seconds: float | None = 30.0  # stop timing a measurement after this (>= 1 repetition)
    data_subjects: int = 4
    data_steps: int = 12
    statistic: str = "median"      # of the timed repetitions (Timing.step_s)
    data: bool = True              # measure the data path
    note: str = ""

    @classmethod
    def for_device(cls, device: str, quick: bool, cpu_size: int) -> "Plan":
        if device == "cuda":
            if quick:
                return cls(size=240, train_steps=3, train_steps_large=3, train_warmup=2,
                           train_warmup_large=2, infer_reps=5, infer_reps_large=3,
                           infer_warmup=2, infer_warmup_large=2, data_steps=6,
                           note="quick: 2 warm-up + 3 timed training steps, 5 (batch 1) and "
                                "3 (batch 32) timed inference batches")
            return cls(size=240, note="3 warm-up + 10 timed training steps, 20 (batch 1) and "
                                      "10 (batch 32) timed inference batches; medians")
        if quick:
            size = min(cpu_size, 64)
            return cls(size=size, train_steps=1, train_steps_large=1, train_warmup=1,
                       train_warmup_large=1, infer_reps=1, infer_reps_large=1,
                       infer_warmup=1, infer_warmup_large=1, data_subjects=2,
                       data_steps=4, statistic="min",
                       note=f"CPU quick: 4 × {size}² slices, 1 warm-up + 1 timed repetition")
        # batch 32 runs after batch 8 of the same model and path: lazy initialisation is
        # done, and a warm-up step there would cost as much as the measurement
        return cls(size=cpu_size, train_steps=2, train_steps_large=1, train_warmup=1,
                   train_warmup_large=0, infer_reps=3, infer_reps_large=1, infer_warmup=1,
                   infer_warmup_large=0, max_seconds=None, data_subjects=3, data_steps=8,
                   statistic="min",
                   note=f"reduced CPU configuration: 4 × {cpu_size}² slices instead of "
                        f"240² ({(cpu_size / 240) ** 2:.0%} of the paper's FLOPs per slice); "
                        f"training: 1 warm-up + 2 timed steps at batch 8, 1 timed step at "
                        f"batch 32; inference: 1 warm-up + 3 timed batches at batch 1, 1 at "
                        f"batch 32; the fastest timed repetition counts (shared machine)")


def parse_variant(name: str, device: str, compile_: bool) -> FastPaths:
    if name == "eager":
        return FastPaths.eager(device)
    if name == "fast":
        return FastPaths.auto(device, compile=compile_)
    switches = name.split("+")
    bad = [s for s in switches if s not in SWITCHES]
    if bad:
        raise SystemExit(f"unknown variant switch(es) {bad}: use eager, fast or "
                         f"+-joined {', '.join(SWITCHES)}")
    fast = FastPaths.from_config({s: True for s in switches}, device)
    return fast


# --------------------------------------------------------------------------------------------
# the data path
# --------------------------------------------------------------------------------------------
def build_synthetic_store(tmp: Path, subjects: int, size: int) -> Path:
    """A phantom cohort of ``subjects`` preprocessed into a slice store at ``size``."""
    from gpcore.data.phantom import generate_phantom
    from gpcore.data.prepare import preprocess

    raw = generate_phantom(tmp / "raw", subjects, seed=0, workers=1, progress=False)
    preprocess("brats", raw, tmp / "store", size=None if size == 240 else size, workers=1,
               progress=False)
    return tmp / "store"


def data_wait(store_dir: Path, fast: FastPaths, workers: int, batch: int, steps: int,
              model: str = "gp_unet") -> dict:
    """Fraction of a training loop (GP-UNet, ``fast``, the paper's augmentation and max
    normalisation) spent blocked on ``next(loader)``; the first batch (worker start-up) is
    reported apart."""
    from torch.utils.data import DataLoader

    from gpcore.data.dataset import Augmentation, SliceDataset
    from gpcore.data.store import SliceStore

    device = fast.device
    store = SliceStore(store_dir)
    ds = SliceDataset(store, None, "max", Augmentation(), with_mask=False)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0),
                        **fast.loader_kwargs(workers))
    net = fast.prepare_model(build(model, device)).train()
    opt = make_optimiser(net, fast)
    weights = torch.tensor(CLASS_WEIGHTS, device=device)
    t = time.perf_counter()
    it = iter(loader)  # starts the worker processes
    first = next(it)
    startup = time.perf_counter() - t
    wait = total = 0.0
    done = 0
    batch_data = first
    while done < steps:
        t0 = time.perf_counter()
        x = fast.prepare_batch(batch_data["image"].to(device, non_blocking=True))
        y = batch_data["label"].to(device, non_blocking=True).clamp_min(0)
        opt.zero_grad(set_to_none=True)
        with fast.autocast():
            logits = net(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y, weight=weights)
        loss.backward()
        opt.step()
        sync(device)
        t1 = time.perf_counter()
        try:
            batch_data = next(it)
        except StopIteration:
            it = iter(loader)
            batch_data = next(it)
        t2 = time.perf_counter()
        wait += t2 - t1
        total += t2 - t0
        done += 1
    del it, loader
    return {"wait_fraction": wait / total, "step_s": total / steps, "startup_s": startup,
            "steps": steps}


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def _timing_cols(t, flops_per_slice: float, peak: float) -> dict:
    return {"slices_per_s": t.slices_per_s, "ms_per_batch": t.step_s * 1e3,
            "ms_mean": t.mean_s * 1e3, "reps": len(t.seconds), "statistic": t.statistic,
            "gflop_per_s": flops_per_slice * t.slices_per_s / 1e9,
            "frac_peak": flops_per_slice * t.slices_per_s / peak,
            "flops_per_slice": flops_per_slice, "peak_mem_mib": t.peak_mem / MiB,
            "peak_mem_rise_mib": t.peak_mem_delta / MiB, "memory_method": t.memory_method}


def run(device: str, plan: Plan, models, variants: list[str], compile_: bool,
        progress: bool = True) -> tuple[pd.DataFrame, dict]:
    env = environment()
    env["load_start"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    paths = {v: parse_variant(v, device, compile_) for v in variants}
    env["paths"] = {v: f.describe() for v, f in paths.items()}
    if device == "cuda":
        env["tf32_conv"] = torch.backends.cudnn.allow_tf32
        env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    rows: list[dict] = []
    n_meas = 4 + len(models) * len(variants) * (len(plan.train_batches)
                                               + len(plan.infer_batches)) + 3 * plan.data
    bar = tqdm(total=n_meas, desc=f"benchmark ({device})", unit="measurement",
               disable=not progress)

    loads = []

    def tick():
        bar.update()
        if hasattr(os, "getloadavg"):
            loads.append(os.getloadavg()[0])

    def base(section, model="", batch=math.nan, variant="", **kw):
        return {"device": device, "section": section, "model": model, "batch": batch,
                "size": plan.size, "variant": variant,
                "path": paths[variant].describe() if variant in paths else "", **kw}

    # ---- the machine's matmul peak, in this run ------------------------------------------------
    # measured at the start and again at the end; the higher counts (the peak is a maximum,
    # and on a shared machine either may have been disturbed)
    peaks = {}

    def measure_peaks(when: str):
        for dtype, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            bar.set_postfix_str(f"matmul peak {label}")
            value = matmul_peak(device, dtype)
            peaks[label] = max(peaks.get(label, 0.0), value)
            rows.append(base("matmul_peak", variant=label, gflop_per_s=value / 1e9, note=when))
            tick()

    measure_peaks("start")

    def peak_for(fast: FastPaths) -> float:
        return peaks["bf16" if fast.bf16 else "fp32"]

    # ---- training and inference, each model, eager and fast side by side ----------------------
    # variants alternate at every batch size, so that what else the machine runs affects the
    # measurements being compared alike
    for model in models:
        fwd = forward_flops(model, plan.size)
        trn = training_flops(model, plan.size)
        for batch in plan.train_batches:
            for variant, fast in paths.items():
                bar.set_postfix_str(f"train {model} {variant} b{batch}")
                steps = plan.train_steps if batch <= 8 else plan.train_steps_large
                warmup = plan.train_warmup if batch <= 8 else plan.train_warmup_large
                t = time_training(model, fast, batch, plan.size, steps=steps,
                                  warmup=warmup, max_seconds=plan.max_seconds,
                                  statistic=plan.statistic)
                rows.append(base("train", model, batch, variant,
                                 **_timing_cols(t, trn, peak_for(fast))))
                tick()
        for batch in plan.infer_batches:
            for variant, fast in paths.items():
                bar.set_postfix_str(f"infer {model} {variant} b{batch}")
                reps = plan.infer_reps if batch <= 8 else plan.infer_reps_large
                warmup = plan.infer_warmup if batch <= 8 else plan.infer_warmup_large
                t = time_inference(model, fast, batch, plan.size, reps=reps, warmup=warmup,
                                   max_seconds=plan.max_seconds, statistic=plan.statistic)
                rows.append(base("inference", model, batch, variant,
                                 **_timing_cols(t, fwd, peak_for(fast))))
                tick()

    # ---- the data path ----------------------------------------------------------------------
    if plan.data:
        from benchmarks.data_store import _read_throughput

        with tempfile.TemporaryDirectory(prefix="gpcore-bench-") as tmp:
            bar.set_postfix_str("building a synthetic store")
            store_dir = build_synthetic_store(Path(tmp), plan.data_subjects, plan.size)
            from gpcore.data.store import SliceStore

            n_slices = len(SliceStore(store_dir))
            bar.set_postfix_str("store random reads")
            rate = _read_throughput(store_dir, batch=32, batches=100)
            rows.append(base("data", "store reads", 32, "", slices_per_s=rate,
                             note=f"{n_slices}-slice phantom store, {plan.size}², int16 images + "
                                  f"uint8 masks, random batches of 32 (page cache warm)"))
            tick()
            fast = paths.get("fast") or next(iter(paths.values()))
            for workers in (0, 2):
                bar.set_postfix_str(f"data wait, {workers} workers")
                d = data_wait(store_dir, fast, workers, batch=8, steps=plan.data_steps)
                rows.append(base("data", "loader wait (GP-UNet fast step)", 8,
                                 "fast" if "fast" in paths else "",
                                 wait_fraction=d["wait_fraction"], ms_per_batch=d["step_s"] * 1e3,
                                 reps=d["steps"], workers=workers,
                                 note=f"first batch (worker start-up) {d['startup_s']:.2f} s, "
                                      f"excluded; augmentation + max normalisation"))
                tick()
    measure_peaks("end")
    bar.close()
    env["load_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    env["load_max"] = max(loads, default=math.nan)

    df = pd.DataFrame(rows)
    # fractions of the final (highest) peak of the precision each path computes in
    for idx in df[df["section"].isin(["train", "inference"])].index:
        fast = paths[df.at[idx, "variant"]]
        df.at[idx, "frac_peak"] = df.at[idx, "gflop_per_s"] * 1e9 / peak_for(fast)
    # ratios against eager of the same model and batch, side by side
    df["ratio_vs_eager"] = np.nan
    df["mem_ratio_vs_eager"] = np.nan
    for section in ("train", "inference"):
        sec = df["section"] == section
        eager = df[sec & (df["variant"] == "eager")].set_index(["model", "batch"])
        for idx in df[sec].index:
            key = (df.at[idx, "model"], df.at[idx, "batch"])
            if key in eager.index:
                e = eager.loc[key]
                df.at[idx, "ratio_vs_eager"] = df.at[idx, "slices_per_s"] / e["slices_per_s"]
                rise = e["peak_mem_rise_mib"]
                if rise > 0:
                    df.at[idx, "mem_ratio_vs_eager"] = df.at[idx, "peak_mem_rise_mib"] / rise
    return df, env


def markdown(df: pd.DataFrame, env: dict, plan: Plan, device: str, wall_s: float,
             command: str) -> str:
    """The README block: hardware, versions, the side-by-side table and the data path."""
    others = [v for v in env["paths"] if v != "eager"]
    hw = f"{env['cpu']}, {env['cores']} cores, {env['torch_threads']} torch thread(s)"
    if env.get("gpu"):
        hw = f"{env['gpu']}; host {hw}"
    peaks = df[df["section"] == "matmul_peak"].groupby("variant")["gflop_per_s"].max()
    lines = [f"### {device.upper()} run, {env['date']}", "",
             f"`{command}` — {wall_s / 60:.1f} min wall. {hw}; PyTorch {env['torch']}, "
             f"Python {env['python']}. 1-min load average {env['load_start']:.2f} before, "
             f"up to {env['load_max']:.2f} during the run (this run alone adds about "
             f"{env['torch_threads']}).", ""]
    if device == "cpu" and env["load_max"] > env["torch_threads"] + 0.75:
        lines += [f"**Shared machine:** other jobs were using the {env['cores']} CPU cores "
                  f"during the run; throughputs are lower bounds, and the ratios, measured "
                  f"back to back, are the more reliable numbers.", ""]
    if plan.note:
        lines += [f"Configuration: {plan.note}.", ""]
    lines += ["Paths: " + "; ".join(f"`{v}` = {p}" for v, p in env["paths"].items()) + ". "
              f"Measured matmul peak (`torch.mm`): fp32 {peaks.get('fp32', math.nan):,.0f} "
              f"GFLOP/s, bf16 {peaks.get('bf16', math.nan):,.0f} GFLOP/s; % peak is against "
              f"the peak of the precision the path computes in.", ""]
    head = "| measurement | model | batch | eager | " + " | ".join(others) + " | " + \
        " | ".join(f"{v}/eager" for v in others) + " | eager % peak | " + \
        " | ".join(f"{v} % peak" for v in others) + " | peak mem MiB eager / " + \
        " / ".join(others) + " |"
    lines += [head, "|" + "---|" * 3 + "---:|" * (2 + 3 * len(others)) + "---:|"]
    for section, label, unit in (("train", "training", "slices/s"),
                                 ("inference", "inference", "")):
        sec = df[df["section"] == section]
        for (model, batch), g in sec.groupby(["model", "batch"], sort=False):
            g = g.set_index("variant")
            if section == "inference" and batch == 1:
                what, fmt = "inference latency (ms)", "{:.0f}"
                val = {v: g.at[v, "ms_per_batch"] for v in g.index}
            else:
                what = f"{label} (slices/s)"
                fmt = "{:.1f}" if g["slices_per_s"].max() < 100 else "{:.0f}"
                val = {v: g.at[v, "slices_per_s"] for v in g.index}
            # speed-up: throughput ratio (= eager latency / variant latency)
            ratio = {v: g.at[v, "ratio_vs_eager"] for v in others if v in g.index}
            ratio_fmt = "{:.2f}×"
            mem = " / ".join(f"{g.at[v, 'peak_mem_mib' if device == 'cuda' else 'peak_mem_rise_mib']:.0f}"
                             for v in ["eager", *others] if v in g.index)
            cells = [what, model, str(int(batch)), fmt.format(val.get("eager", math.nan))]
            cells += [fmt.format(val.get(v, math.nan)) for v in others]
            cells += [ratio_fmt.format(ratio.get(v, math.nan)) for v in others]
            cells += [f"{100 * g.at[v, 'frac_peak']:.1f}" if v in g.index else ""
                      for v in ["eager", *others]]
            cells += [mem]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Peak memory: " + ("`torch.cuda.max_memory_allocated` (model, optimiser "
                                     "state, activations)." if device == "cuda" else
                                     "rise of the process's resident set (VmHWM) over the "
                                     "measurement (model, optimiser state, activations)."), ""]
    data = df[df["section"] == "data"]
    if len(data):
        lines += ["| data path | value | note |", "|---|---:|---|"]
    for _, r in data.iterrows():
        if r["model"] == "store reads":
            lines.append(f"| slice store random reads | {r['slices_per_s']:,.0f} slices/s | "
                         f"{r['note']} |")
        else:
            lines.append(f"| DataLoader wait, {int(r['workers'])} workers, batch 8 | "
                         f"{100 * r['wait_fraction']:.1f} % of step time | "
                         f"step {r['ms_per_batch']:.0f} ms over {int(r['reps'])} steps; "
                         f"{r['note']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="a smoke run (fewer steps; on "
                                                             "CPU 64² slices)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results")))
    parser.add_argument("--cpu-size", type=int, default=128,
                        help="slice size on CPU (paper: 240; default 128 to finish in "
                             "< 10 min on 2 cores)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--variants", default="eager,fast",
                        help="eager, fast, or +-joined switches, e.g. channels_last+bf16")
    parser.add_argument("--compile", action="store_true", help="torch.compile in the fast path")
    parser.add_argument("--train-batches", help="comma-separated (default 8,32)")
    parser.add_argument("--infer-batches", help="comma-separated (default 1,32)")
    parser.add_argument("--skip-data", action="store_true", help="leave out the data path")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads; 0 (default): PyTorch's default (one per core), "
                             "or 1 on a CPU run when other jobs already load the machine "
                             "(1-min load average >= half the cores), where multi-threaded "
                             "kernels stall at their barriers and time noise, not code")
    parser.add_argument("--no-readme", action="store_true",
                        help="do not append the table to benchmarks/README.md")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    variants = args.variants.split(",")
    if "eager" not in variants:
        variants.insert(0, "eager")
    threads = args.threads
    if not threads and args.device == "cpu" and hasattr(os, "getloadavg") \
            and os.getloadavg()[0] >= 0.5 * (os.cpu_count() or 1):
        threads = 1
        print(f"[bench] the machine is busy (load average {os.getloadavg()[0]:.2f}): timing "
              f"with 1 torch thread (--threads N to override)")
    if threads:
        torch.set_num_threads(threads)
    plan = Plan.for_device(args.device, args.quick, args.cpu_size)
    if args.train_batches:
        plan.train_batches = tuple(int(b) for b in args.train_batches.split(","))
    if args.infer_batches:
        plan.infer_batches = tuple(int(b) for b in args.infer_batches.split(","))
    plan.data = not args.skip_data
    models = args.models.split(",")
    started = time.perf_counter()
    df, env = run(args.device, plan, models, variants, args.compile)
    wall = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"bench_{args.device}_{env['date']}" + ("_quick" if args.quick else "")
    csv = out / f"{stem}.csv"
    df.insert(0, "date", env["date"])
    df.to_csv(csv, index=False, float_format="%.6g")
    command = "python -m benchmarks.run " + " ".join(argv if argv is not None else
                                                     __import__("sys").argv[1:])
    text = markdown(df, env, plan, args.device, wall, command.strip())
    print("\n" + text)
    print(f"wrote {csv} ({wall / 60:.1f} min)")
    if not args.no_readme:
        with open(README, "a") as fh:
            fh.write("\n" + text)
        print(f"appended the table to {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
