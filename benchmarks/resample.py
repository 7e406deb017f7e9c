"""Fourier up-sampling as a cached matrix product against the FFT route, side by side.

GP-UNet and GP-ReconResNet up-sample with ``scipy.signal.resample`` semantics. On a CPU the
FFT route (rfft, zero-pad copy, irfft per axis) took ~75 % of GP-UNet's forward at 128 px
(profile of the Figshare occlusion maps, issue 13); :func:`gpcore.models.resample.fourier_resample`
now multiplies by the ``(m, n)`` resampling matrix instead. Interleaved in one process:

    python -m benchmarks.resample [--threads 2] [--size 128] [--reps 3]

Prints, per model and numeric path, seconds per training step (batch 16) and per
``forward_with_heatmap`` call (batch 32, eval), FFT route / matrix route, and the largest
difference of the two routes' heatmaps on the same input (rounding only: the matrix route
stays in float32 under bf16 autocast, as the FFT route does).
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

import torch

from gpcore.configs import load_profile
from gpcore.models import gp_recon_resnet, gp_unet, resample
from gpcore.study.efficiency import (build, environment, inference_call, interleaved,
                                     make_batch, training_step)
from gpcore.training.fast import FastPaths

MODELS = ("gp_unet", "gp_recon_resnet")
ROUTES = {"fft": resample.fourier_resample_fft, "matrix": resample.fourier_resample}


@contextmanager
def route(name: str):
    """Both models' up-sampling through ``ROUTES[name]`` inside the block."""
    saved = gp_unet.fourier_resample, gp_recon_resnet.fourier_resample
    gp_unet.fourier_resample = gp_recon_resnet.fourier_resample = ROUTES[name]
    try:
        yield
    finally:
        gp_unet.fourier_resample, gp_recon_resnet.fourier_resample = saved


def routed(name: str, fn):
    def call():
        with route(name):
            return fn()
    return call


def max_heatmap_difference(model: str, size: int, **kw) -> float:
    """Largest |heatmap_fft - heatmap_matrix| relative to the heatmap's range (fp32, eval)."""
    net = build(model, "cpu", **kw).eval()
    x, _ = make_batch(2, 4, size, "cpu")
    out = {}
    for name in ROUTES:
        with route(name), torch.no_grad():
            out[name] = net.forward_with_heatmap(x)[1]
    ref = out["fft"]
    return float((ref - out["matrix"]).abs().max() / (ref.max() - ref.min()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profile", default="quick", help="model widths from this profile")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    widths = load_profile(args.profile).get("models") or {}
    env = environment()
    print(f"{env['cpu']}, {args.threads} thread(s), torch {env['torch']}, {args.size} px, "
          f"profile {args.profile} widths; median of {args.reps} interleaved repetitions")
    paths = {"fp32": FastPaths.eager("cpu"), "auto": FastPaths.auto("cpu")}
    print(f"{'model':16s} {'path':5s} {'call':22s} {'fft s':>8s} {'matrix s':>9s} "
          f"{'fft/matrix':>10s}")
    for model in MODELS:
        kw = widths.get(model, {})
        for pname, fast in paths.items():
            calls = {"train step, batch 16": lambda: training_step(model, fast, 16, args.size,
                                                                   4, **kw),
                     "heatmaps, batch 32": lambda: inference_call(model, fast, 32, args.size,
                                                                  4, **kw)}
            for cname, make in calls.items():
                fn = make()
                times = interleaved({r: routed(r, fn) for r in ROUTES}, "cpu", warmup=1,
                                    reps=args.reps)
                t_fft, t_mat = (sorted(times[r])[len(times[r]) // 2] for r in ROUTES)
                print(f"{model:16s} {pname:5s} {cname:22s} {t_fft:8.3f} {t_mat:9.3f} "
                      f"{t_fft / t_mat:9.2f}x", flush=True)
                del fn
        print(f"{model:16s} fp32 heatmap max |fft - matrix| / range: "
              f"{max_heatmap_difference(model, args.size, **kw):.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
