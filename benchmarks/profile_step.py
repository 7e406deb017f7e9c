"""Where the time of one training step goes: ``torch.profiler`` over one step of a GP model.

    python -m benchmarks.profile_step [--model gp_unet] [--size 128] [--batch 8]
        [--variants eager,channels_last,bf16,channels_last+bf16] [--device cpu] [--top 12] [--threads N]

For each variant (``eager``: NCHW fp32; ``channels_last``; ``bf16``: autocast; combinations
with ``+``), two untimed warm-up steps, then one profiled training step (forward, weighted
cross-entropy, backward, Adam). Prints the top operators by self time and the share of the
step spent in each category (convolution, FFT resampling, element-wise / other) as Markdown.
"""
from __future__ import annotations

import argparse
import time

import torch

from gpcore.study.efficiency import training_step
from gpcore.training.fast import FastPaths

#: operator name fragments -> category (first match wins; matched on the lower-cased name)
CATEGORIES = [
    ("convolution", ("conv", "mkldnn_convolution", "cudnn", "slow_conv")),
    ("FFT resampling", ("fft",)),
    ("optimiser (Adam)", ("adam", "_foreach", "addcdiv", "lerp")),
    ("pooling / pixel (un)shuffle", ("pool", "pixel_shuffle", "pixel_unshuffle")),
    ("normalisation", ("batch_norm", "instance_norm", "native_batch_norm")),
    ("copies / layout / dtype", ("copy_", "to_copy", "contiguous", "clone", "cat", "empty",
                                 "zero_", "fill_")),
]


def category(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "element-wise / other"


def profile_variant(model_name: str, size: int, batch: int, variant: str, device: str,
                    top: int) -> tuple[float, list[tuple[str, float, int]], dict[str, float]]:
    """``(step seconds, [(op, self ms, calls)] top ops, {category: share of self time})``."""
    from torch.profiler import ProfilerActivity, profile

    fast = FastPaths(device=torch.device(device), bf16="bf16" in variant,
                     channels_last="channels_last" in variant)
    torch.manual_seed(0)
    step = training_step(model_name, fast, batch, size)  # what benchmarks.run times

    for _ in range(2):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        t = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    shares: dict[str, float] = {}
    for e in events:
        cat = category(e.key)
        shares[cat] = shares.get(cat, 0.0) + e.self_cpu_time_total / total
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    ops = [(e.key, e.self_cpu_time_total / 1e3, e.count) for e in events[:top]]
    return seconds, ops, dict(sorted(shares.items(), key=lambda kv: -kv[1]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gp_unet")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--variants", default="eager,channels_last,bf16,channels_last+bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.model}, one training step, batch {args.batch} × 4 × {args.size}², "
          f"{args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{time.strftime('%Y-%m-%d')}")
    for variant in args.variants.split(","):
        seconds, ops, shares = profile_variant(args.model, args.size, args.batch, variant,
                                               args.device, args.top)
        print(f"\n### {variant}: step {seconds:.2f} s (under the profiler)\n")
        print("| operator | self ms | calls | category |\n|---|---:|---:|---|")
        for name, ms, calls in ops:
            print(f"| `{name}` | {ms:.0f} | {calls} | {category(name)} |")
        print("\nshare of self time: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))


if __name__ == "__main__":
    main()
