"""Slice-store benchmark: preprocessing throughput and peak memory for 10 and 40 phantom
subjects side by side, and random-access read throughput of the store.

    python -m benchmarks.data_store [--subjects 10 40] [--size 240] [--workers 2]

Each preprocessing run happens in a fresh child process, so its peak RSS (its own, VmHWM, and
that of its worker processes) is measured alone. Peak RSS must stay flat as subjects grow: the store
streams subject by subject. Prints a Markdown table; append it to benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _child(raw: str, out: str, size: int | None, workers: int) -> None:
    from gpcore.data.prepare import preprocess

    t = time.perf_counter()
    store = preprocess("brats", raw, out, size=size, workers=workers, progress=False)
    seconds = time.perf_counter() - t
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec, so it
    # would report the benchmark driver's peak rather than this process's
    own = next(int(line.split()[1]) for line in open("/proc/self/status")
               if line.startswith("VmHWM")) / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "slices": len(store), "rss_main_mib": own,
                      "rss_worker_mib": kids}))


def _read_throughput(store_dir: Path, batch: int = 32, batches: int = 200) -> float:
    from gpcore.data.store import SliceStore

    store = SliceStore(store_dir)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(batches):
        rows = np.sort(rng.integers(0, len(store), batch))
        np.asarray(store.images[rows], dtype=np.float32)
        np.asarray(store.masks[rows])
    return batch * batches / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--size", type=int, default=0, help="0: native 240x240")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = args.size or None
    if args.child:
        return _child(*args.child, size, args.workers)
    from gpcore.data.phantom import generate_phantom

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = generate_phantom(Path(tmp) / "raw", max(args.subjects), seed=0, progress=False)
        for n in args.subjects:
            sub = Path(tmp) / f"raw{n}" / raw.name
            sub.mkdir(parents=True)
            subjects = sorted(p for p in raw.iterdir() if p.is_dir())[:n]
            for s in subjects:
                (sub / s.name).symlink_to(s)
            ids = {s.name for s in subjects}
            lines = (raw / "name_mapping.csv").read_text().splitlines()
            (sub / "name_mapping.csv").write_text("\n".join(
                [lines[0]] + [l for l in lines[1:] if l.split(",")[-1] in ids]) + "\n")
            out = Path(tmp) / f"store{n}"
            res = subprocess.run([sys.executable, "-m", "benchmarks.data_store", "--child",
                                  str(sub), str(out), "--size", str(args.size),
                                  "--workers", str(args.workers)],
                                 check=True, capture_output=True, text=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            r.update(subjects=n, subjects_per_s=n / r["seconds"],
                     reads_slices_per_s=_read_throughput(out))
            rows.append(r)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"\nSlice store, synthetic phantom, {'240x240' if not size else f'{size}x{size}'}, "
          f"{args.workers} workers; {machine}; {time.strftime('%Y-%m-%d')}\n")
    print("| subjects | slices | preprocessing s | subjects/s | peak RSS main MiB | "
          "peak RSS worker MiB | random reads slices/s (batch 32) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['subjects']} | {r['slices']} | {r['seconds']:.1f} | "
              f"{r['subjects_per_s']:.2f} | {r['rss_main_mib']:.0f} | {r['rss_worker_mib']:.0f} | "
              f"{r['reads_slices_per_s']:.0f} |")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"\nRSS ratio {b['subjects']}/{a['subjects']} subjects: main "
              f"{b['rss_main_mib'] / a['rss_main_mib']:.2f}, workers "
              f"{b['rss_worker_mib'] / a['rss_worker_mib']:.2f} (flat = 1.0)")


if __name__ == "__main__":
    main()
