"""Does bf16 autocast (+ channels-last) pay on *this* CPU? The quick profile's GP models,
one training step each, fp32 eager against the bf16 fast path, interleaved (A B, A B, ...)
in one process, and what ``"auto"`` decides here (issue 13: the switch was keyed on AMX
tiles and stayed off on an AVX-512 BF16 EPYC where bf16 measured 1.3-2.1x faster).

    python -m benchmarks.cpu_bf16 [--threads 1] [--batch 16] [--size 64] [--reps 5]

Prints one row per model: seconds per step of each path and the ratio fp32 / bf16.
"""
from __future__ import annotations

import argparse
import sys

import torch

from gpcore.configs import load_profile
from gpcore.study.efficiency import environment, interleaved, training_step
from gpcore.training.fast import FastPaths, cpu_bf16_kind

MODELS = ("gp_unet", "gp_shuffle_unet", "gp_recon_resnet")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_bf16", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--profile", default="quick", help="model widths from this profile")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    widths = load_profile(args.profile).get("models") or {}
    env = environment()
    auto = FastPaths.auto("cpu")
    print(f"{env['cpu']}, {args.threads} thread(s), torch {env['torch']}; bf16 hardware: "
          f"{cpu_bf16_kind() or 'none'}; 'auto' turns bf16 {'on' if auto.bf16 else 'off'}, "
          f"channels_last {'on' if auto.channels_last else 'off'}")
    paths = {"fp32": FastPaths.eager("cpu"),
             "bf16+channels_last": FastPaths("cpu", bf16=True, channels_last=True)}
    print(f"{'model':18s} {'fp32 s/step':>12s} {'bf16 s/step':>12s} {'fp32/bf16':>10s}")
    for model in MODELS:
        steps = {name: training_step(model, fast, args.batch, args.size, 4,
                                     **widths.get(model, {}))
                 for name, fast in paths.items()}
        times = interleaved(steps, "cpu", warmup=1, reps=args.reps)
        t32, t16 = (sorted(times[k])[len(times[k]) // 2] for k in paths)
        print(f"{model:18s} {t32:12.3f} {t16:12.3f} {t32 / t16:9.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
