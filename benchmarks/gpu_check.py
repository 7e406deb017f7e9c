"""GPU correctness check of the GP models (run on a lent GPU machine; see README/notes).

1. The reference test vectors on CUDA, in strict fp32 and with TF32 convolutions allowed.
2. Each paper-size model, batch 8 of 4×240×240: eval outputs in fp32 vs bf16 autocast, and one
   training step (forward + backward) in each; finite gradients.
3. torch.compile of each model: outputs and gradients against eager.
Prints a JSON report and writes it to $OUT/gpu_check.json when OUT is set.

Usage: PYTHONPATH=. python benchmarks/gpu_check.py ../shared/reference/vectors
"""
import json
import os
import sys
import time
from pathlib import Path

import torch

from gpcore.models import create_model, list_models
from gpcore.models.test_vectors import check_vector


def rel(a, b):
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def timed(fn, reps=5):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e3


def main(vectors_dir):
    dev = "cuda"
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "vectors": [], "models": []}
    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for v in sorted(Path(vectors_dir).glob("*.json")):
            report["vectors"].append({**check_vector(v, dev), "tf32": tf32})
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    x = torch.rand(8, 4, 240, 240, device=dev)
    y = torch.randint(0, 3, (8,), device=dev)
    for name in list_models():
        torch.manual_seed(0)
        model = create_model(name).to(dev)
        row = {"model": name}
        model.eval()
        with torch.no_grad():
            lo32, hm32 = model.forward_with_heatmap(x)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                lo16, hm16 = model.forward_with_heatmap(x)
        row["eval_shapes"] = [list(lo16.shape), list(hm16.shape)]
        row["bf16_finite"] = bool(torch.isfinite(hm16).all())
        row["bf16_vs_fp32_logits_rel"] = rel(lo16, lo32)
        row["bf16_vs_fp32_heatmap_rel"] = rel(hm16, hm32)
        row["bf16_vs_fp32_heatmap_corr"] = float(torch.corrcoef(
            torch.stack([hm16.float().flatten(), hm32.flatten()]))[0, 1])
        model.train()

        def step(m=model, amp=False):
            m.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = torch.nn.functional.cross_entropy(m(x), y)
            loss.backward()
            return loss
        for amp in (False, True):
            step(amp=amp)
            grads_ok = all(torch.isfinite(p.grad).all() for p in model.parameters()
                           if p.grad is not None)
            row[f"train_{'bf16' if amp else 'fp32'}_grads_finite"] = bool(grads_ok)
            row[f"train_step_ms_{'bf16' if amp else 'fp32'}_indicative"] = timed(
                lambda: step(amp=amp))
        # torch.compile against eager, eval mode (deterministic), fp32
        model.eval()  # eager reference again: the train steps moved BatchNorm running stats
        with torch.no_grad():
            lo32, hm32 = model.forward_with_heatmap(x)
        t = time.perf_counter()
        try:
            compiled = torch.compile(model.forward_with_heatmap)
            with torch.no_grad():
                lo_c, hm_c = compiled(x)
            torch.cuda.synchronize()
            row["compile_s"] = time.perf_counter() - t
            row["compile_vs_eager_heatmap_rel"] = rel(hm_c, hm32)
            row["compile_vs_eager_logits_rel"] = rel(lo_c, lo32)
        except Exception as err:  # report, do not hide
            row["compile_error"] = f"{type(err).__name__}: {err}"[:500]
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
        report["models"].append(row)
        del model
        torch.cuda.empty_cache()
    text = json.dumps(report, indent=1)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(text)


if __name__ == "__main__":
    main(sys.argv[1])
