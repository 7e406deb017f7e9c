"""Compare the tables of two results folders (e.g. the smoke study before and after a
refactor): every CSV present in both, cell by cell, leaving out what a re-run changes by
itself (timings, dates, the machine, file paths).

    python scripts/compare_tables.py OLD/results/phantom/smoke NEW/results/phantom/smoke

Prints one line per table (``same`` or what differs) and exits 1 when any table differs.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

VOLATILE = re.compile(r"seconds|_s$|time|date|machine|latency|slices_per_s|throughput|memory|"
                      r"mib|rss|hwm|finished|path|output|run_dir", re.I)


def compare(a: Path, b: Path, rtol: float = 1e-9) -> list[str]:
    problems = []
    names = sorted({p.name for p in a.glob("*.csv")} | {p.name for p in b.glob("*.csv")})
    for name in names:
        if not (a / name).is_file() or not (b / name).is_file():
            problems.append(f"{name}: only in {'the first' if (a / name).is_file() else 'the second'}")
            continue
        x, y = pd.read_csv(a / name), pd.read_csv(b / name)
        keep = [c for c in x.columns if not VOLATILE.search(str(c))]
        if list(x.columns) != list(y.columns) or len(x) != len(y):
            problems.append(f"{name}: columns or rows differ ({x.shape} vs {y.shape})")
            continue
        for col in keep:
            u, v = x[col], y[col]
            if pd.api.types.is_numeric_dtype(u) and pd.api.types.is_numeric_dtype(v):
                same = np.allclose(u.to_numpy(float), v.to_numpy(float), rtol=rtol, atol=0,
                                   equal_nan=True)
            else:
                same = u.astype(str).equals(v.astype(str))
            if not same:
                problems.append(f"{name}: column {col!r} differs")
                break
        else:
            print(f"{name}: same" + (f" (left out: {', '.join(c for c in x.columns if c not in keep)})"
                                     if len(keep) < len(x.columns) else ""))
    return problems


if __name__ == "__main__":
    problems = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    for line in problems:
        print(line)
    sys.exit(1 if problems else 0)
