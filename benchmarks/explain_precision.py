"""The explanation stage's precision: fp32 against bf16 autocast + channels-last, side by side.

    python -m benchmarks.explain_precision RUN_DIR... [--slices 8] [--device cpu]

For each trained, evaluated run (``gpcore train`` + ``gpcore evaluate``), on the same
``--slices`` ground-truth-tumour test slices (spread over the patients), computes occlusion
maps (the profile-independent window 6 / stride 4 of ``quick``), guided-backprop maps and the
deletion predictions in both precisions and prints: the median over slices of the Spearman
correlation inside the brain of each map pair, the share of equal deletion predictions, and the
seconds of each precision with their ratio. This is the measurement behind
``ExplainConfig.precision = "auto"`` (``gpcore.explanations.run``).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from gpcore.study.efficiency import environment
from gpcore.evaluation.explanation import deletion_predictions
from gpcore.explanations.run import brain_masks, load_run, model_inputs, own_maps, spread_rows
from gpcore.explanations.captum_maps import (LogitsModel, guided_backprop_maps,
                                             occlusion_maps)


def _maps(loaded: dict, positions: np.ndarray, autocast) -> tuple:
    test = loaded["test"]
    x = model_inputs(loaded, positions).to(loaded["device"])
    target = torch.as_tensor(test["labels"][positions], device=x.device)
    start = time.perf_counter()
    occ = occlusion_maps(loaded["model"], x, target, 6, 4, 0.0, 32, autocast=autocast)
    gbp = guided_backprop_maps(loaded["model"], x, target, autocast=autocast)
    preds = deletion_predictions(LogitsModel(loaded["model"], autocast), x,
                                 torch.from_numpy(own_maps(test, positions)), batch_size=32)
    return occ.cpu().numpy(), gbp.cpu().numpy(), preds, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    env = environment()
    print(f"{env['date']}: {env['cpu']}, {env['cores']} cores, torch {env['torch']}, "
          f"{env['torch_threads']} threads\n")
    print("| run | occlusion Spearman | guided BP Spearman | deletion predictions equal "
          "| fp32 s | bf16 s | fp32 / bf16 |\n|---|---:|---:|---:|---:|---:|---:|")
    for run in args.runs:
        loaded = load_run(run, args.device)
        test = loaded["test"]
        tumour = np.flatnonzero(test["masks"].reshape(len(test["masks"]), -1).any(1))
        pos = tumour[spread_rows(tumour, test["patient_ids"][tumour], args.slices)]
        brain = brain_masks(loaded, pos)
        ref = _maps(loaded, pos, None)
        fast = _maps(loaded, pos, torch.bfloat16)
        rho = [np.median([spearmanr(ref[k][i][brain[i]], fast[k][i][brain[i]])[0]
                          for i in range(len(pos))]) for k in (0, 1)]
        equal = float((ref[2] == fast[2]).mean())
        print(f"| {run} | {rho[0]:.3f} | {rho[1]:.3f} | {equal:.3f} | {ref[3]:.1f} | "
              f"{fast[3]:.1f} | {ref[3] / fast[3]:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
