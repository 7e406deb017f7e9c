"""Which numeric path pays on *this* CPU? The quick profile's GP models, one training step
each, fp32 eager against fp32 + channels-last and the bf16 fast path, interleaved (A B C,
A B C, ...) in one process, what ``"auto"`` decides here, and how close each path runs to the
CPU's measured matmul peak of its precision (issue 13: the switch was keyed on AMX tiles and
stayed off on an AVX-512 BF16 EPYC where bf16 measured 1.3-2.1x faster; on an AVX2-only EPYC
bf16 is emulated and 8-13x slower).

    python -m benchmarks.cpu_bf16 [--threads 1] [--batch 16] [--size 64] [--reps 5] [--compile]

Prints one row per model: seconds per step of each path, the ratios against fp32, and the
achieved GFLOP/s (convolutions and matmuls of forward + backward, ``training_flops``) as a
share of ``torch.mm``'s measured peak in the same precision. A path near its peak has no
kernel-level speed-up left: only fewer FLOPs (or bf16 hardware) make it faster.
``--compile`` adds fp32 under ``torch.compile`` (inductor; its compile time is printed, not
counted).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from gpcore.configs import load_profile
from gpcore.study.efficiency import (environment, interleaved, matmul_peak, training_flops,
                                     training_step)
from gpcore.training.fast import FastPaths, cpu_bf16_kind, cpu_has_native_bf16

MODELS = ("gp_unet", "gp_shuffle_unet", "gp_recon_resnet")


def paths(compile: bool) -> dict[str, FastPaths]:
    out = {"fp32": FastPaths.eager("cpu"),
           "fp32+channels_last": FastPaths("cpu", channels_last=True),
           "bf16+channels_last": FastPaths("cpu", bf16=True, channels_last=True)}
    if compile:
        out["fp32+compile"] = FastPaths("cpu", compile=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_bf16", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="add fp32 + torch.compile")
    parser.add_argument("--profile", default="quick", help="model widths from this profile")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    widths = load_profile(args.profile).get("models") or {}
    env = environment()
    auto = FastPaths.auto("cpu")
    peak = {"fp32": matmul_peak("cpu", torch.float32), "bf16": matmul_peak("cpu", torch.bfloat16)}
    print(f"{env['cpu']}, {args.threads} thread(s), torch {env['torch']}; bf16 hardware: "
          f"{cpu_bf16_kind() or 'none'}; 'auto' turns bf16 {'on' if auto.bf16 else 'off'}, "
          f"channels_last {'on' if auto.channels_last else 'off'}; torch.mm peak "
          f"{peak['fp32'] / 1e9:.0f} GFLOP/s fp32, {peak['bf16'] / 1e9:.1f} bf16")
    native = cpu_has_native_bf16()

    def share(rate: float, path: str) -> str:
        if path.startswith("bf16") and not native:  # emulated: no bf16 peak to speak of
            return "emulated"
        return f"{100 * rate / peak[path[:4]]:.0f} % of peak"

    chosen = paths(args.compile)
    names = list(chosen)
    print("| model | " + " | ".join(f"{n} s/step" for n in names) + " | "
          + " | ".join(f"fp32 / {n}" for n in names[1:])
          + " | GFLOP/s (share of the matmul peak) |")
    print("|---|" + "---:|" * (2 * len(names)))
    for model in MODELS:
        kwargs = widths.get(model, {})
        steps = {}
        for name, fast in chosen.items():
            steps[name] = training_step(model, fast, args.batch, args.size, 4, **kwargs)
            if fast.compile:  # compiles on its first call; not part of the timing
                start = time.perf_counter()
                steps[name]()
                print(f"({model}: torch.compile took {time.perf_counter() - start:.0f} s)")
        times = interleaved(steps, "cpu", warmup=1, reps=args.reps)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        flops = training_flops(model, args.size, 4, **kwargs) * args.batch
        rates = ", ".join(f"{n} {flops / med[n] / 1e9:.0f} ({share(flops / med[n], n)})"
                          for n in names)
        print(f"| {model} | " + " | ".join(f"{med[n]:.3f}" for n in names) + " | "
              + " | ".join(f"{med['fp32'] / med[n]:.2f}x" for n in names[1:])
              + f" | {rates} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
