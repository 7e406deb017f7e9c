#!/usr/bin/env bash
# The GPU evidence of issue 16, as ONE command for a lent GPU machine (≤ 8 min on an H100/H200):
#   bash benchmarks/gpu_run.sh [OUT]          (OUT defaults to $OUT, the device tool's folder)
# 1. the benchmark suite at the paper's size (4 x 240 x 240), torch.compile off and on
#    (benchmarks.run: eager fp32 vs fast path, training and inference, MFU, memory, data path);
# 2. a short paper-configuration training loop of each GP model from a phantom store at
#    240 x 240 through the DataLoader (benchmarks.train_loop: slices/s, data-wait share, GPU
#    memory, MFU), compile off and on;
# 3. `gpcore predict` throughput on that store.
# Everything lands under OUT (CSV, logs, a profiler trace of one training loop); nothing else
# is written. DRY=1 runs the same steps on the CPU at a tiny size (the CI test
# tests/test_gpu_run_script.py does this, so that the GPU call cannot fail on a typo).
set -euo pipefail
OUT=${1:-${OUT:?give OUT as an argument or in the environment}}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
PY=${PYTHON:-python3}
if [[ "${DRY:-0}" == 1 ]]; then
  DEV=cpu; SUBJ=1; SIZE=(--size 32); STEPS=3; WARM=1; WORKERS=0; BATCH=2
  export TORCHDYNAMO_DISABLE=1  # the --compile paths run, without minutes of CPU compilation
  RUN_ARGS=(--device cpu --quick --cpu-size 32 --models gp_unet --train-batches 2
            --infer-batches 1 --skip-data)
else
  DEV=cuda; SUBJ=6; SIZE=(); STEPS=300; WARM=20; WORKERS=8; BATCH=8
  RUN_ARGS=(--device cuda)
fi
T0=$(date +%s)
stamp() { echo "[gpu_run] $1 ($(( $(date +%s) - T0 )) s)"; }
{
  stamp "start"
  if [[ $DEV == cuda ]]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; fi
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$OUT/environment.txt"

# 1. benchmark suite, compile off / on (each writes its own CSV + Markdown block)
stamp "benchmarks.run (eager vs fast)"
$PY -m benchmarks.run "${RUN_ARGS[@]}" --out "$OUT/suite" --no-readme 2>&1 | tee "$OUT/suite.log"
stamp "benchmarks.run --compile"
$PY -m benchmarks.run "${RUN_ARGS[@]}" --compile --variants eager,fast --out "$OUT/suite_compile" \
  --no-readme 2>&1 | tee "$OUT/suite_compile.log"

# 2. a phantom store at the paper's size, then the training loop
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
stamp "phantom ($SUBJ subjects) and store"
$PY -m gpcore phantom --out "$WORK/raw" --subjects $SUBJ --seed 1 > "$OUT/phantom.log" 2>&1
$PY -m gpcore preprocess --source brats --input "$WORK/raw/MICCAI_BraTS2020_TrainingData" \
  --out "$WORK/store" "${SIZE[@]}" > "$OUT/store.log" 2>&1
stamp "benchmarks.train_loop"
$PY -m benchmarks.train_loop --store "$WORK/store" --device $DEV --steps $STEPS --warmup $WARM \
  --batch $BATCH --workers $WORKERS --out "$OUT/train_loop" 2>&1 | tee "$OUT/train_loop.log"
stamp "benchmarks.train_loop --compile"
$PY -m benchmarks.train_loop --store "$WORK/store" --device $DEV --steps $STEPS --warmup $WARM \
  --batch $BATCH --workers $WORKERS --compile --out "$OUT/train_loop" 2>&1 \
  | tee "$OUT/train_loop_compile.log"

# 3. gpcore predict throughput (paper-configuration GP-UNet; weights untrained: speed only)
stamp "gpcore predict"
$PY - "$WORK/ckpt/gp_unet.safetensors" "$WORK/store" <<'PY'
import sys
from gpcore.data.store import SliceStore
from gpcore.models import create_model
from gpcore.models.checkpoints import save_model
store = SliceStore(sys.argv[2])
net = create_model("gp_unet", in_channels=int(store.images.shape[1]), n_classes=len(store.classes))
save_model(net, sys.argv[1], extra={"input_size": int(store.images.shape[-1]), "normalisation": "max",
                                     "classes": list(store.classes), "channels": list(store.meta.get("channels") or [])})
PY
P0=$(date +%s.%N)
$PY -m gpcore predict --checkpoint "$WORK/ckpt/gp_unet.safetensors" --store "$WORK/store" \
  --out "$WORK/pred" --device $DEV --batch-size 32 $([[ $DEV == cuda ]] && echo --fast) \
  > "$OUT/predict.log" 2>&1
P1=$(date +%s.%N)
$PY - "$WORK/pred" "$P0" "$P1" "$OUT/predict.csv" <<'PY'
import json, sys, numpy as np
pred, t0, t1, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
n = len(np.load(f"{pred}/probabilities.npy"))
meta = json.load(open(f"{pred}/predict.json"))
line = f"slices,seconds,slices_per_s,device\n{n},{t1 - t0:.2f},{n / (t1 - t0):.1f},{meta.get('device')}\n"
open(out, "w").write(line)
print("predict (process start to finish):", line.splitlines()[1])
PY

# a profiler trace of a few GP-UNet training steps (what limits it, if a target is missed)
stamp "profiler trace"
$PY - "$WORK/store" "$DEV" "$OUT/profile_gp_unet" <<'PY'
import sys, torch
from torch.profiler import ProfilerActivity, profile
from gpcore.study.efficiency import training_step
from gpcore.training.fast import FastPaths
store, dev, out = sys.argv[1:]
from gpcore.data.store import SliceStore
size = int(SliceStore(store).images.shape[-1])
step = training_step("gp_unet", FastPaths.auto(dev), 8, size)
for _ in range(3):
    step()
acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
with profile(activities=acts) as prof:
    for _ in range(5):
        step()
    if dev == "cuda":
        torch.cuda.synchronize()
prof.export_chrome_trace(out + ".json")
key = "self_cuda_time_total" if dev == "cuda" else "self_cpu_time_total"
open(out + ".txt", "w").write(prof.key_averages().table(sort_by=key, row_limit=25))
print("trace:", out + ".json")
PY
stamp "done"
