#!/usr/bin/env bash
# GPU check of the training engine's CUDA paths (bf16 autocast, channels_last, fused Adam,
# torch.compile) and of `gpcore predict`, on a small smoke store carried to the GPU machine.
# Usage (repository root, on a CUDA machine): bash benchmarks/gpu_train_check.sh STORE SPLIT OUT
set -uo pipefail
S=$1; P=$2; OUT=$3
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
for m in gp_unet gp_shuffle_unet gp_recon_resnet; do
  echo "== $m (compile=${COMPILE:-true})"
  python3 -m gpcore.training.cli --store "$S" --split "$P" --profile smoke --model $m \
    --out /tmp/gpu_runs/$m --no-progress train.epochs=3 train.device=cuda \
    train.fast.compile=${COMPILE:-true} train.num_workers=4 2>&1 | grep -v Warning | tail -4
  cp /tmp/gpu_runs/$m/metrics.csv "$OUT/metrics_$m.csv" 2>/dev/null
done
python3 -m gpcore predict --checkpoint /tmp/gpu_runs/gp_unet/best.safetensors --store "$S" \
  --split "$P" --fold 0 --part test --out /tmp/gpu_pred --device cuda 2>&1 | tail -2
python3 - <<'PY'
import json, numpy as np
p = np.load("/tmp/gpu_pred/probabilities.npy"); h = np.load("/tmp/gpu_pred/heatmaps.npy", mmap_mode="r")
print("predict:", p.shape, h.shape, h.dtype, "prob sums ok:", bool(np.allclose(p.sum(1), 1, atol=1e-3)),
      json.load(open("/tmp/gpu_pred/predict.json"))["device"])
PY
