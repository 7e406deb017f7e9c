"""A short real training loop per GP model, from a slice store through the DataLoader:
throughput, data-wait share, peak memory and MFU (issue 16).

    python -m benchmarks.train_loop --store data/phantom/paper/store_native --device cuda \
        --steps 300 --batch 8 --workers 8 [--compile] [--out benchmarks/results]

Unlike ``benchmarks.run`` (synthetic batches already on the device), every step here reads
its batch from the store with the paper's augmentation and max normalisation
(``gpcore.data.SliceDataset``), copies it to the device and trains the paper configuration
(``create_model(name)``) with the fast paths of ``gpcore/configs/train.yaml`` (bf16 autocast and
channels-last where "auto" turns them on; ``--compile``: torch.compile). Per model:

* ``slices_per_s``: batch × timed steps / their wall time (the first ``--warmup`` steps are
  not timed: allocator, cuDNN autotuning, compilation);
* ``data_wait_share``: the share of that time spent waiting for the next batch (time from
  asking the DataLoader iterator to having the batch on the device);
* ``peak_memory_mib``: CUDA ``max_memory_allocated`` (CPU: the resident set's high-water mark);
* ``mfu_bf16`` / ``mfu_fp32``: model FLOP/s (``FlopCounterMode`` forward + backward, FFT
  resampling not counted) over the machine's measured ``torch.mm`` peak in that dtype.

Writes ``OUT/train_loop_<device>_<date>.csv`` and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

MODELS = ("gp_unet", "gp_shuffle_unet", "gp_recon_resnet")


def measure(model: str, store, device: torch.device, steps: int, warmup: int, batch: int,
            workers: int, compile: bool, peaks: dict) -> dict:
    """One model's loop; returns the row of the results table."""
    from torch.utils.data import DataLoader

    from gpcore.data.dataset import Augmentation, SliceDataset
    from gpcore.study.efficiency import (_rss, _vm_hwm, build, make_optimiser, optimiser_step, sync,
                                   training_flops)
    from gpcore.training.fast import FastPaths

    fast = FastPaths.auto(device, compile=compile)
    ds = SliceDataset(store, None, "max", Augmentation(), with_mask=False)
    # with replacement: any number of steps from any store size
    sampler = torch.utils.data.RandomSampler(ds, replacement=True,
                                             num_samples=(steps + warmup) * batch)
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                        pin_memory=fast.pin_memory, drop_last=True,
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    in_channels = int(store.images.shape[1])
    net = fast.prepare_model(build(model, device, in_channels=in_channels,
                                   n_classes=len(store.classes))).train()
    step_net = fast.compile_model(net)
    opt = make_optimiser(net, fast)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = _rss()
    wait = busy = 0.0
    it = iter(loader)
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        item = next(it)
        x = fast.prepare_batch(item["image"].to(device, non_blocking=True))
        y = item["label"].to(device, non_blocking=True)
        sync(device)
        t1 = time.perf_counter()
        optimiser_step(step_net, opt, fast, x, y)
        sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            wait += t1 - t0
            busy += t2 - t1
    total = wait + busy
    size = int(store.images.shape[-1])
    flops = training_flops(model, size, in_channels, n_classes=len(store.classes)) * batch
    achieved = flops * steps / busy if busy else float("nan")
    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        hwm = _vm_hwm()
        peak_mem = (hwm if hwm is not None else _rss()) / 2 ** 20 - rss0 / 2 ** 20
    return {"model": model, "device": str(device), "fast": fast.describe(), "size": size,
            "batch": batch, "workers": workers, "steps": steps,
            "slices_per_s": batch * steps / total, "step_ms": 1000 * total / steps,
            "data_wait_share": wait / total, "peak_memory_mib": peak_mem,
            "mfu_bf16": achieved / peaks["bf16"], "mfu_fp32": achieved / peaks["fp32"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_loop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, help="slice store folder (gpcore preprocess)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--steps", type=int, default=300, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8, help="per step (paper: 8, x16 accumulated)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results")))
    args = parser.parse_args(argv)

    from gpcore.data.store import SliceStore
    from gpcore.study.efficiency import environment, matmul_peak

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks.train_loop: error: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    store = SliceStore(args.store)
    env = environment()
    peaks = {"fp32": matmul_peak(device, torch.float32),
             "bf16": matmul_peak(device, torch.bfloat16)}
    rows = []
    for model in args.models.split(","):
        row = measure(model, store, device, args.steps, args.warmup, args.batch, args.workers,
                      args.compile, peaks)
        rows.append({**row, "compile": args.compile, "gpu": env["gpu"], "cpu": env["cpu"],
                     "torch": env["torch"], "cuda": torch.version.cuda, "date": env["date"],
                     "peak_bf16_tflops": peaks["bf16"] / 1e12,
                     "peak_fp32_tflops": peaks["fp32"] / 1e12})
        print(f"[train_loop] {model}: {row['slices_per_s']:.1f} slices/s, data wait "
              f"{100 * row['data_wait_share']:.1f} %, {row['peak_memory_mib']:.0f} MiB, MFU "
              f"(bf16 peak) {100 * row['mfu_bf16']:.1f} %", flush=True)
    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"train_loop_{args.device}{'_compile' if args.compile else ''}_{env['date']}.csv"
    tmp = out / (name + ".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(out / name)
    cols = ["model", "fast", "size", "batch", "workers", "slices_per_s", "step_ms",
            "data_wait_share", "peak_memory_mib", "mfu_bf16"]
    print(table[cols].to_markdown(index=False, floatfmt=".3g"))
    print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
