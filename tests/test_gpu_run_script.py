"""The GPU evidence script (issue 16) dry-run on the CPU at a tiny size: every step of
benchmarks/gpu_run.sh runs, so the one call on a lent GPU cannot fail on a typo."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_run_script_dry_run_on_cpu(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "DRY": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "benchmarks/gpu_run.sh", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[gpu_run] done" in proc.stdout
    for name in ("suite", "suite_compile"):
        suite = pd.read_csv(next((out / name).glob("bench_cpu_*.csv")))
        assert {"eager", "fast"} <= set(suite["variant"])
    for csv in ("train_loop_cpu_*.csv", "train_loop_cpu_compile_*.csv"):
        loop = pd.read_csv(next((out / "train_loop").glob(csv)))
        assert list(loop["model"]) == ["gp_unet", "gp_shuffle_unet", "gp_recon_resnet"]
        assert (loop["slices_per_s"] > 0).all()
        assert loop["data_wait_share"].between(0, 1).all() and (loop["mfu_bf16"] > 0).all()
    predict = pd.read_csv(out / "predict.csv")
    assert predict["slices"].iat[0] > 0 and predict["device"].iat[0] == "cpu"
    assert (out / "profile_gp_unet.json").stat().st_size > 0
