"""Which fast-path switch helps which model: every variant timed round-robin.

    python -m benchmarks.ablation [--device cpu] [--size 128] [--batch 8] [--reps 3]
        [--models gp_unet,...] [--variants eager,channels_last,bf16,channels_last+bf16]
        [--threads N] [--what train,inference]

For each model, all variants are built at once and timed in turns (eager, channels_last, bf16,
..., eager, channels_last, ...), one warm-up each first, so that other jobs on a shared machine
disturb every variant alike (``gpcore.study.efficiency.interleaved``); the fastest repetition of each
counts. Prints a Markdown table of slices/s and ratios against eager. This is the measurement
behind the ``"auto"`` defaults of ``gpcore.training.fast``.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from gpcore.study.efficiency import environment, inference_call, interleaved, training_step
from benchmarks.run import MODELS, parse_variant


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--variants", default="eager,channels_last,bf16,channels_last+bf16")
    parser.add_argument("--what", default="train,inference")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment()
    variants = args.variants.split(",")
    paths = {v: parse_variant(v, args.device, False) for v in variants}
    load0 = os.getloadavg()[0]
    started = time.perf_counter()
    rows = []
    for what in args.what.split(","):
        make = training_step if what == "train" else inference_call
        for model in args.models.split(","):
            calls = {v: make(model, f, args.batch, args.size) for v, f in paths.items()}
            times = interleaved(calls, args.device, warmup=1, reps=args.reps)
            del calls
            best = {v: min(t) for v, t in times.items()}
            rows.append((what, model, best, times))
            print(f"{what} {model}: " + ", ".join(
                f"{v} {args.batch / b:.2f} slices/s" for v, b in best.items()), flush=True)
    print(f"\n{args.device}, {env['cpu']}, {torch.get_num_threads()} torch threads, batch "
          f"{args.batch} × 4 × {args.size}², {args.reps} interleaved repetitions (fastest "
          f"counts), torch {env['torch']}, {env['date']}; load average {load0:.2f} → "
          f"{os.getloadavg()[0]:.2f}; {(time.perf_counter() - started) / 60:.1f} min\n")
    others = [v for v in variants if v != "eager"]
    print("| | model | eager slices/s | " + " | ".join(f"{v}/eager" for v in others) +
          " | spread eager (max/min) |")
    print("|---|---|---:|" + "---:|" * len(others) + "---:|")
    for what, model, best, times in rows:
        e = best["eager"]
        print(f"| {what} | {model} | {args.batch / e:.2f} | " +
              " | ".join(f"{e / best[v]:.2f}×" for v in others) +
              f" | {max(times['eager']) / min(times['eager']):.2f} |")


if __name__ == "__main__":
    main()
