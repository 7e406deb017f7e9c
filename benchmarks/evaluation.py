"""Segmentation-evaluation benchmark: thresholding + scoring of synthetic heatmaps read from a
float16 memmap, and the patient-level bootstrap of the median.

    python -m benchmarks.evaluation [--slices 10000] [--workers N]

Heatmaps: 3 classes at 240 x 240 (a noisy Gaussian blob in the predicted channel), written
batch by batch to ``heatmaps.npy`` in a temporary folder and scored through ``mmap_mode="r"``.
Bootstrap: 10,000 resamples over 40,000 slices of 400 patients. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def _write_inputs(folder: Path, n: int, size: int = 240, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    heat = np.lib.format.open_memmap(folder / "heatmaps.npy", "w+", np.float16, (n, k, size, size))
    masks = np.lib.format.open_memmap(folder / "masks.npy", "w+", np.uint8, (n, size, size))
    yy, xx = np.mgrid[:size, :size]
    labels = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), n)
    probs[np.arange(n), labels] += 1  # mostly correct predictions
    probs /= probs.sum(1, keepdims=True)
    for s in range(0, n, 500):  # batch by batch, as predict_store writes
        e = min(s + 500, n)
        heat[s:e] = rng.normal(0, 0.2, (e - s, k, size, size)).astype(np.float16)
        for i in range(s, e):
            cy, cx, r = rng.integers(60, 180), rng.integers(60, 180), rng.integers(8, 30)
            d2 = (yy - cy) ** 2 + (xx - cx) ** 2
            heat[i, labels[i]] += (2 * np.exp(-d2 / (2 * r ** 2))).astype(np.float16)
            masks[i] = (d2 <= r ** 2) * (labels[i] > 0)
    heat.flush()
    masks.flush()
    return probs, labels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    from gpcore.evaluation.bootstrap import bootstrap_median_ci
    from gpcore.evaluation.segmentation import score_slices

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        probs, labels = _write_inputs(Path(tmp), args.slices)
        heat = np.load(Path(tmp) / "heatmaps.npy", mmap_mode="r")
        masks = np.load(Path(tmp) / "masks.npy", mmap_mode="r")
        t = time.perf_counter()
        scores = score_slices(heat, probs, masks, labels, 0.3, workers=args.workers)
        seconds = time.perf_counter() - t
        rows.append((f"threshold + clean-up + score, {args.slices:,} x 3 x 240 x 240 float16 "
                     f"memmap, workers={args.workers or os.cpu_count()}", seconds,
                     f"{1e3 * seconds / len(scores):.2f} ms/slice"))
    rng = np.random.default_rng(1)
    values, groups = rng.random(40000), rng.integers(0, 400, 40000)
    t = time.perf_counter()
    bootstrap_median_ci(values, groups, n_resamples=10000)
    seconds = time.perf_counter() - t
    rows.append(("bootstrap_median_ci, 10,000 resamples, 40,000 slices, 400 patients", seconds,
                 ""))
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"date {datetime.date.today()}; numpy {np.__version__}\n")
    print("| task | seconds | note |\n|---|---|---|")
    for task, sec, note in rows:
        print(f"| {task} | {sec:.2f} | {note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
