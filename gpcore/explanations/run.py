"""Explanation quality of one evaluated training run (``gpcore explain RUN_DIR``).

For the run's **test** slices and the model's own localisation map (the heatmap channel of the
**ground-truth** class, MProtoNet's convention - ``docs/spec/mprotonet.md`` §6, §8):

* **AP** (activation precision) and DSC@0.5 per ground-truth tumour slice, and per patient on
  the stacked slice maps of the tumour-grade channel (the 3D-comparable figure);
* **IDS** (incremental deletion score): deletion in 2 % steps with fill value 0 (= background
  under the per-slice max normalisation), balanced accuracy over the slices, clipped,
  rescaled, trapezoid area (lower is better), on at most ``ids_max_slices`` test slices;
* **agreement** of the own map with Captum occlusion and guided backpropagation on at most
  ``captum_max_slices`` tumour slices: Pearson / Spearman inside the brain, top-10 % IoU,
  pointing game, each summarised as median (or rate) with a patient-bootstrap CI.

Everything goes to ``RUN_DIR/explanations/`` and is reused while its settings are unchanged.
The model's map is whatever ``forward_with_heatmap`` returns: GP heatmaps, MProtoNet's
prototype maps, the CNN's Grad-CAM.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.splits import load_split, split_rows
from ..data.store import SliceStore
from ..io import atomic_path, write_table
from ..machine import torch_threads
from ..rundir import RunDir

VERSION = 1


@dataclass(frozen=True)
class ExplainConfig:
    """Settings of the explanation analysis (profile section ``explain:``)."""
    occlusion_window: int = 11        # pixels; MProtoNet: 11 voxels at 1.5 mm
    occlusion_stride: int = 5
    occlusion_baseline: float = 0.0   # model-input space: background after max normalisation
    deletion_fill: float = 0.0        # MProtoNet's IDS fill value, in model-input space
    captum_max_slices: int = 64       # tumour slices explained by occlusion / guided backprop
    ids_max_slices: int = 512         # slices in the deletion curve
    top_k: float = 0.1                # top-k fraction for the IoU of two maps
    batch_size: int = 32
    n_resamples: int = 2000
    seed: int = 0
    # deletion, occlusion and guided backprop: "auto" = bf16 autocast + channels-last where
    # training's fast path uses them (CUDA, AMX CPUs; against fp32 there: occlusion maps
    # Spearman >= 0.97, deletion predictions >= 99.8 % equal), else fp32; or "bf16" | "fp32"
    precision: str = "auto"

    def autocast(self, device) -> torch.dtype | None:
        """The autocast dtype of the explanation forwards on ``device`` (None: fp32)."""
        from ..training.fast import auto_default

        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"explain.precision must be auto, bf16 or fp32, "
                             f"got {self.precision!r}")
        bf16 = self.precision == "bf16" or (self.precision == "auto"
                                            and auto_default("bf16", torch.device(device)))
        return torch.bfloat16 if bf16 else None

    @classmethod
    def from_profile(cls, profile: str | None, study: str | None = None,
                     **overrides) -> "ExplainConfig":
        from ..configs import load_profile

        values = dict(load_profile(profile, study).get("explain") or {}) if profile else {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def spread_rows(candidates: np.ndarray, patients: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` positions of ``candidates`` spread evenly over the sorted list, so that every
    patient contributes in proportion (deterministic)."""
    order = np.lexsort((candidates, patients))
    if len(order) <= n:
        return np.sort(order)
    return np.sort(order[np.linspace(0, len(order) - 1, n).round().astype(int)])


def load_run(run_dir: str | Path, device: str = "cpu") -> dict:
    """Model, store, test rows and test predictions of an evaluated run."""
    from ..inference.predict import load_checkpoint, run_predictions

    run = RunDir(run_dir)
    if not run.checkpoint.is_file():
        raise FileNotFoundError(f"{run.checkpoint}: missing; train the run with `gpcore train`")
    store = SliceStore(run.store_path)
    split = load_split(run.split_file)
    test = run_predictions(run, store, split_rows(split, store.index, run.fold, "test"), "test",
                           device, 64, False)
    model, meta = load_checkpoint(run.checkpoint)
    return {"run": run.path, "record": run.record, "store": store, "test": test,
            "model": model.to(device).eval(), "meta": meta, "device": device,
            "name": run.model_name,
            "normalisation": (meta.get("extra") or {}).get("normalisation", "max")}


def own_maps(test: dict, positions: np.ndarray, channel=None) -> np.ndarray:
    """``(n, H, W)`` float32 heatmaps of ``positions``, channel = ground-truth class (or the
    given per-position channels)."""
    channel = test["labels"][positions] if channel is None else np.asarray(channel)
    return np.stack([np.asarray(test["heatmaps"][p, c], dtype=np.float32)
                     for p, c in zip(positions, channel)]) if len(positions) else \
        np.zeros((0,) + test["heatmaps"].shape[2:], np.float32)


def model_inputs(loaded: dict, positions: np.ndarray) -> torch.Tensor:
    """Normalised model inputs ``(n, C, H, W)`` of test ``positions``."""
    from ..inference.predict import normalise_batch

    rows = loaded["test"]["index"]["row"].to_numpy()[positions]
    uniq, inverse = np.unique(rows, return_inverse=True)
    return normalise_batch(loaded["store"].images[uniq][inverse], loaded["normalisation"])


def activation_precision_table(test: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per GT-tumour slice AP / DSC@0.5, and per patient on the stacked tumour-grade maps."""
    from ..evaluation.explanation import activation_precision

    masks, labels, pids = test["masks"], test["labels"], test["patient_ids"]
    tumour = np.flatnonzero(masks.reshape(len(masks), -1).any(1))
    maps = own_maps(test, tumour)
    rows = [{"position": int(p), "patient_id": pids[p], "label": int(labels[p]),
             **activation_precision(m, masks[p])} for p, m in zip(tumour, maps)]
    per_slice = pd.DataFrame(rows, columns=["position", "patient_id", "label", "ap", "dsc"])
    patients = []
    for pid in pd.unique(pids[tumour]):
        pos = np.flatnonzero(pids == pid)
        grade = int(np.bincount(labels[pos][masks[pos].reshape(len(pos), -1).any(1)]).argmax())
        vol = own_maps(test, pos, np.full(len(pos), grade))
        patients.append({"patient_id": pid, "n_slices": len(pos), "grade": grade,
                         **activation_precision(vol, masks[pos])})
    return per_slice, pd.DataFrame(patients)


def deletion(loaded: dict, cfg: ExplainConfig, progress: bool = True
             ) -> tuple[np.ndarray, float, int]:
    """MProtoNet's deletion curve ``(51, 2)`` (accuracy, balanced accuracy over the chosen test
    slices), its IDS (balanced accuracy) and the number of slices; read chunk by chunk, so
    memory is bounded by ``ids_max_slices`` predictions, not images."""
    from tqdm.auto import tqdm

    from ..evaluation.explanation import (curve_from_predictions, deletion_predictions,
                                         incremental_deletion_score)
    from .captum_maps import LogitsModel

    test = loaded["test"]
    positions = spread_rows(np.arange(len(test["labels"])), test["patient_ids"],
                            cfg.ids_max_slices)
    net = LogitsModel(loaded["model"], cfg.autocast(loaded["device"]))
    chunk = 4 * cfg.batch_size
    preds = []
    for start in tqdm(range(0, len(positions), chunk), desc=f"{loaded['name']}: deletion",
                      disable=not progress, leave=False):
        pos = positions[start:start + chunk]
        x = model_inputs(loaded, pos).to(loaded["device"])
        maps = torch.from_numpy(own_maps(test, pos))
        preds.append(deletion_predictions(net, x, maps, fill=cfg.deletion_fill,
                                          batch_size=cfg.batch_size))
    curve = curve_from_predictions(np.concatenate(preds, axis=1), test["labels"][positions])
    return curve, incremental_deletion_score(curve[:, 1]), len(positions)


def brain_masks(loaded: dict, positions: np.ndarray) -> np.ndarray:
    """``(n, H, W)`` brain masks of the test slices at ``positions``: the same brain as the
    map rules' restriction (:func:`gpcore.inference.maps.brain_mask`)."""
    from ..inference.maps import brain_masks as store_brain_masks

    rows = loaded["test"]["index"]["row"].to_numpy()[positions]
    return store_brain_masks(loaded["store"].images, rows)


def captum_agreement(loaded: dict, positions: np.ndarray, cfg: ExplainConfig,
                     progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Occlusion and guided-backprop maps of ``positions`` (target: ground-truth class) and
    their agreement with the model's own map; returns the per-slice table and the maps."""
    from tqdm.auto import tqdm

    from ..evaluation.agreement import correlations, pointing_game, top_k_iou
    from .captum_maps import guided_backprop_maps, occlusion_maps

    test = loaded["test"]
    own = own_maps(test, positions)
    occ = np.zeros_like(own)
    gbp = np.zeros_like(own)
    autocast = cfg.autocast(loaded["device"])
    bar = tqdm(total=len(positions), desc=f"{loaded['name']}: occlusion + guided backprop",
               unit="slice", disable=not progress, leave=False)
    for start in range(0, len(positions), cfg.batch_size):
        pos = positions[start:start + cfg.batch_size]
        x = model_inputs(loaded, pos).to(loaded["device"])
        target = torch.as_tensor(test["labels"][pos], device=x.device)
        occ[start:start + len(pos)] = occlusion_maps(
            loaded["model"], x, target, cfg.occlusion_window, cfg.occlusion_stride,
            cfg.occlusion_baseline, per_eval=cfg.batch_size,
            autocast=autocast).float().cpu().numpy()
        gbp[start:start + len(pos)] = guided_backprop_maps(
            loaded["model"], x, target, autocast=autocast).float().cpu().numpy()
        bar.update(len(pos))
    bar.close()
    brain = brain_masks(loaded, positions)
    rows = []
    for i, p in enumerate(positions):
        tumour = test["masks"][p]
        row = {"position": int(p), "patient_id": test["patient_ids"][p],
               "label": int(test["labels"][p]),
               "pointing_own": pointing_game(own[i], tumour)}
        for name, other in (("occlusion", occ[i]), ("guided_backprop", gbp[i])):
            r, rho = correlations(own[i], other, brain[i])
            row.update({f"pearson_{name}": r, f"spearman_{name}": rho,
                        f"top{int(cfg.top_k * 100)}_iou_{name}":
                            top_k_iou(own[i], other, brain[i], cfg.top_k),
                        f"pointing_{name}": pointing_game(other, tumour)})
        rows.append(row)
    return pd.DataFrame(rows), {"own": own, "occlusion": occ, "guided_backprop": gbp}


def summarise(values: pd.Series, groups, how: str, n_resamples: int, seed: int) -> dict:
    """``{estimate, low, high, n}``: median or mean (rates) with a patient-bootstrap CI."""
    from ..evaluation.bootstrap import bootstrap_mean_ci, bootstrap_median_ci

    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    fn = bootstrap_median_ci if how == "median" else bootstrap_mean_ci
    est, low, high = fn(v, np.asarray(groups), n_resamples, seed=seed)
    return {"estimate": est, "low": low, "high": high, "n": int(np.isfinite(v).sum())}


def explain_run(run_dir: str | Path, cfg: ExplainConfig | None = None, device: str = "cpu",
                figure_positions: np.ndarray | None = None, progress: bool = True) -> Path:
    """Compute AP, IDS and Captum agreement of an evaluated run; returns
    ``RUN_DIR/explanations`` (reused when its settings are unchanged)."""
    from .captum_maps import guided_backprop_note

    cfg = cfg or ExplainConfig()
    out = RunDir(run_dir).explanations
    settings = {"version": VERSION, **asdict(cfg),
                "figure_positions": None if figure_positions is None
                else [int(p) for p in figure_positions]}
    done = out / "explain.json"
    if done.is_file() and json.loads(done.read_text()).get("settings") == settings:
        return out
    loaded = load_run(run_dir, device)
    test = loaded["test"]
    ap_slices, ap_patients = activation_precision_table(test)
    write_table(ap_slices, out / "ap_slices")
    write_table(ap_patients, out / "ap_patients")
    curve, ids, n_ids = deletion(loaded, cfg, progress)
    write_table(pd.DataFrame({"step": np.arange(len(curve)), "deleted_fraction":
                              np.arange(len(curve)) / (len(curve) - 1),
                              "accuracy": curve[:, 0], "balanced_accuracy": curve[:, 1]}),
                out / "deletion_curve")
    tumour = np.flatnonzero(test["masks"].reshape(len(test["masks"]), -1).any(1))
    chosen = tumour[spread_rows(tumour, test["patient_ids"][tumour], cfg.captum_max_slices)]
    if figure_positions is not None:
        chosen = np.union1d(chosen, np.asarray(figure_positions, dtype=np.int64))
    # one thread: guided backprop's input gradients differ in the last bits between thread
    # counts on some CPUs (AVX2 EPYC), and a pool follow-up and a notebook use different counts
    with torch_threads(1):
        agreement, maps = captum_agreement(loaded, chosen, cfg, progress)
    write_table(agreement, out / "agreement_slices")
    with atomic_path(out / "maps.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, positions=chosen, **maps)
    k = int(cfg.top_k * 100)
    groups = agreement["patient_id"].to_numpy()
    metrics = {
        "ap_slice_mean": summarise(ap_slices["ap"], ap_slices["patient_id"], "mean",
                                   cfg.n_resamples, cfg.seed),
        "ap_patient_mean": summarise(ap_patients["ap"], ap_patients["patient_id"], "mean",
                                     cfg.n_resamples, cfg.seed),
        "dsc05_slice_median": summarise(ap_slices["dsc"], ap_slices["patient_id"], "median",
                                        cfg.n_resamples, cfg.seed),
        "ids": {"estimate": ids, "low": None, "high": None, "n": n_ids},
        "pointing_own": summarise(agreement["pointing_own"].astype(float), groups, "mean",
                                  cfg.n_resamples, cfg.seed)}
    for name in ("occlusion", "guided_backprop"):
        for col, how in ((f"spearman_{name}", "median"), (f"pearson_{name}", "median"),
                         (f"top{k}_iou_{name}", "median"), (f"pointing_{name}", "mean")):
            metrics[col] = summarise(agreement[col].astype(float), groups, how,
                                     cfg.n_resamples, cfg.seed)
    record = {"settings": settings, "model": loaded["name"], "metrics": metrics,
              "guided_backprop": guided_backprop_note(loaded["model"]),
              "occlusion": f"window {cfg.occlusion_window}, stride {cfg.occlusion_stride}, "
                           f"baseline {cfg.occlusion_baseline} (model-input space)",
              "precision": "fp32" if cfg.autocast(device) is None
              else "bf16 autocast, channels-last",
              "target": "ground-truth class", "n_test_slices": int(len(test["labels"])),
              "n_captum_slices": int(len(chosen))}
    with atomic_path(done) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=float) + "\n")
    return out


def _run_cli(args) -> int:
    cfg = ExplainConfig.from_profile(args.profile, args.study)
    out = explain_run(args.run_dir, cfg, device=args.device, progress=not args.no_progress)
    print(f"explanations of {args.run_dir}: {out}")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("explain", help="activation precision, deletion (IDS) and Captum "
                       "agreement of an evaluated run (writes RUN_DIR/explanations)")
    p.add_argument("run_dir", help="a run folder evaluated with gpcore evaluate")
    p.add_argument("--profile", default="quick", help="the profile whose explain: section to use")
    p.add_argument("--study", help="apply the profile's sections for this study")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_cli)
