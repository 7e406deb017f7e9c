"""Segment tumours in MRI volumes with a trained GP classifier: the user-facing inference path.

``segment(checkpoint, inputs, out_dir)`` reads

* a folder of BraTS-like subject folders (``<id>/<id>_{t1,t2,t1ce,flair}.nii.gz``; no
  segmentation and no ``name_mapping.csv`` needed), or one such subject folder, or
* single NIfTI volumes: a ``.nii`` / ``.nii.gz`` file or a folder of them. A 3D volume is one
  contrast (for a model with ``in_channels=1``); a 4D volume ``(X, Y, Z, C)`` holds C contrasts
  in the model's channel order.

Per subject: the volume is reoriented (flips / axis permutations only) to the voxel axes of
the training data (BraTS's LPS, :data:`TRAINING_AXCODES`), so a RAS or sagittal-first volume
is sliced like the training volumes; the outputs go back to the input's own voxel order,
affine and header. Axial slices ``vol[..., k]`` of the reoriented volume; slices with no
positive voxel in any contrast are skipped (heatmap 0, mask 0). A slice whose field of view
is not square (another matrix shape, or anisotropic in-plane voxels) is zero-padded to a
square field of view (:func:`square_fov`); the slices are resized to the model's training
size, normalised as in training (the checkpoint's recorded mode) and classified in batches; the heatmaps are resized back
to the native slice size (bilinear) and thresholded with the run's mask rule (map rule, brain
restriction, offset, clean-up as chosen on validation by ``gpcore evaluate`` when the checkpoint
is in an evaluated run folder; else the published rule and offset; :func:`mask_rule_for`;
clean-up sizes scaled by native size / 240). A slice predicted Healthy has an empty mask.

Written to ``out_dir/<id>/`` (the subject's files are assembled in ``out_dir/.<id>.tmp`` and
the folder is renamed when complete, so a failed subject leaves nothing behind)::

    <id>_heatmap.nii.gz   float32 (X, Y, Z, K), every class channel, the input's geometry
    <id>_mask.nii.gz      uint8 (X, Y, Z)
    <id>_slices.csv       one row per non-empty slice: predicted class, class probabilities
    <id>_summary.json     patient-level class with its rule, tumour volume, checkpoint, offset
    <id>_overview.png     the slices with the largest masks: image, heatmap, mask contour

plus ``out_dir/subjects.csv`` (one row per segmented subject) and, with ``on_error="skip"``,
``out_dir/skipped.csv`` (inputs left out, and why).

Command line: ``gpcore segment --checkpoint M.safetensors --input DIR_OR_FILE --out DIR``;
``--checkpoint hf://owner/name[@revision]`` uses a released model from the Hugging Face Hub
(:mod:`gpcore.models.hub`) with its published contrasts, classes and offset.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..data.errors import DataError, check_on_error, report
from ..data.records import BRATS_CLASSES, BRATS_CONTRASTS
from ..io import atomic_path, publish_dir
from ..rundir import RunDir, healthy_index
from .maps import MAP_RULES, MaskRule
from .overview import overview as write_overview
from .patient import RULE as PATIENT_RULE, patient_class
from .threshold import PUBLISHED_OFFSETS
from .volumes import (TRAINING_AXCODES, SegmentInput, apply_orientation, discover_inputs,
                      load_input, nifti_like, reoriented_zooms, to_training_orientation)

REFERENCE_SIZE = 240  # the published clean-up sizes are in pixels of 240 x 240 slices

# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
@dataclass
class _Predictor:
    model: torch.nn.Module
    name: str
    classes: list[str]
    classes_recorded: bool
    input_size: int | None
    normalisation: str
    channels: list[str] | None
    rule: "MaskRule"
    rule_source: str
    healthy: int | None
    device: str
    batch_size: int
    checkpoint: str = ""  # what summaries record: the file's path, or the Hub URI with its commit

    def predict(self, slices: np.ndarray, native: tuple[int, int],
                spacing: tuple[float, float] = (1.0, 1.0)):
        """``slices (S, C, X, Y)`` -> ``probabilities (S, K)``, heatmaps ``(S, K, X, Y)``.

        ``spacing``: the in-plane voxel size (mm). The model saw square slices of square
        voxels; a slice whose field of view is not square (another matrix shape, or
        anisotropic voxels) is zero-padded to a square field of view first (:func:`square_fov`),
        so that resizing to the model's input keeps shapes, and the heatmaps are cropped
        back."""
        from ..data.store import resize_slices
        from .predict import forward_batches, normalise_batch

        pads = square_fov(native, spacing)
        padded = (native[0] + sum(pads[0]), native[1] + sum(pads[1]))

        def batches():
            for start in range(0, len(slices), self.batch_size):
                chunk = slices[start:start + self.batch_size]
                if padded != tuple(native):
                    chunk = np.pad(chunk, ((0, 0), (0, 0), pads[0], pads[1]))
                dummy = np.zeros((len(chunk), *chunk.shape[2:]), np.uint8)
                chunk, _ = resize_slices(chunk, dummy, self.input_size)
                yield normalise_batch(chunk, self.normalisation)

        probs, maps = [], []
        for logits, heatmap in forward_batches(self.model, batches(), self.device):
            if tuple(heatmap.shape[-2:]) != padded:
                heatmap = F.interpolate(heatmap, size=padded, mode="bilinear",
                                        align_corners=False)
            heatmap = heatmap[..., pads[0][0]:pads[0][0] + native[0],
                              pads[1][0]:pads[1][0] + native[1]]
            probs.append(torch.softmax(logits, 1).cpu().numpy())
            maps.append(heatmap.cpu().numpy())
        return np.concatenate(probs), np.concatenate(maps)


def square_fov(native: tuple[int, int], spacing: tuple[float, float]
               ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Zero-padding ``((before_x, after_x), (before_y, after_y))`` that makes a slice of
    ``native`` voxels of size ``spacing`` mm cover a square field of view (none for a square
    slice of square voxels, e.g. BraTS's 240 x 240 at 1 mm)."""
    ext = [n * float(d) for n, d in zip(native, spacing)]
    side = max(ext)
    pads = []
    for n, d, e in zip(native, spacing, ext):
        extra = int(round((side - e) / float(d))) if e < side * (1 - 1e-3) else 0
        pads.append((extra // 2, extra - extra // 2))
    return tuple(pads[0]), tuple(pads[1])


def mask_rule_for(checkpoint: Path, name: str, offset: float | None, cleanup: bool,
                  map_rule: str | None = None, in_brain: bool | None = None
                  ) -> tuple[MaskRule, str]:
    """The mask rule of ``segment`` and where it comes from: the one chosen on validation
    patients when the checkpoint sits in an evaluated run folder (``RUN/best.safetensors`` with
    ``RUN/evaluation/offset_choice.json``), else the published one (predicted class, whole
    slice, the model's published offset). ``offset`` / ``map_rule`` / ``in_brain`` override
    the respective part; ``cleanup=False`` turns the clean-up off."""
    choice_file = RunDir(Path(checkpoint).parent).offset_choice_file()
    if choice_file.is_file():
        rule = MaskRule.from_choice(json.loads(choice_file.read_text()))
        source = f"validation-chosen ({choice_file})"
    else:
        if offset is None and name not in PUBLISHED_OFFSETS:
            raise ValueError(f"{checkpoint}: no published offset for model {name!r} and no "
                             f"evaluation/offset_choice.json beside it; pass offset= "
                             f"(--offset) or evaluate its run first (gpcore evaluate)")
        rule = MaskRule("predicted", False, PUBLISHED_OFFSETS.get(name, 0.3), True)
        source = "published"
    changed = {k: v for k, v in (("offset", offset), ("rule", map_rule),
                                 ("in_brain", in_brain)) if v is not None}
    if not cleanup:
        changed["cleanup"] = False
    if changed:
        rule = dataclasses.replace(rule, **changed)
        source += " with " + ", ".join(f"{k}={v}" for k, v in changed.items()) + " given"
    return rule, source


def _load_predictor(checkpoint, offset, device, batch_size, cleanup=True, map_rule=None,
                    in_brain=None) -> _Predictor:
    from .predict import load_checkpoint
    from ..models.hub import checkpoint_source

    model, meta = load_checkpoint(checkpoint)
    extra = meta.get("extra") or {}
    name = meta.get("model") or getattr(model, "model_name", "")
    n_classes = int(model.n_classes)  # every model: the GP head's outputs or the baselines'
    classes = list(extra.get("classes") or [])
    recorded = bool(classes)
    if not classes:  # a foreign checkpoint: the published ones are Healthy / LGG / HGG
        classes = list(BRATS_CLASSES) if n_classes == 3 else [f"class_{k}" for k in range(n_classes)]
    if len(classes) != n_classes:
        raise ValueError(f"{checkpoint}: records {len(classes)} classes {classes} but the model "
                         f"has {n_classes} outputs; fix 'classes' in its JSON")
    # a Hub model's cached file has no evaluated run folder beside it: the published rule
    local = Path(meta["hub"]["path"]) if "hub" in meta else Path(checkpoint)
    rule, source = mask_rule_for(local, name, offset, cleanup, map_rule, in_brain)
    healthy = healthy_index(classes)
    input_size = extra.get("input_size")
    return _Predictor(model.to(device).eval(), name, classes, recorded,
                      int(input_size) if input_size else None,
                      extra.get("normalisation") or "max", extra.get("channels") or None,
                      rule, source, healthy, str(device), int(batch_size),
                      checkpoint_source(checkpoint, meta))


# --------------------------------------------------------------------------------------------
# one subject
# --------------------------------------------------------------------------------------------
def _segment_one(item: SegmentInput, pred: _Predictor, folder: Path,
                 contrasts: Sequence[str]) -> dict:
    """Segment one subject, writing its files into ``folder``; return its summary."""
    import nibabel as nib

    image, ref = load_input(item)
    image, back = to_training_orientation(image, ref.affine)
    n_contrasts, nx, ny, nz = image.shape
    spacing = reoriented_zooms(ref, back)
    in_channels = getattr(pred.model, "in_channels", n_contrasts)
    if n_contrasts != in_channels:
        raise DataError(item.paths[0], f"{n_contrasts} contrast(s), but the model takes "
                        f"{in_channels}", "give a 4D volume (X, Y, Z, contrasts) with the "
                        "model's contrasts, or subject folders with --contrasts")
    k_classes = len(pred.classes)
    positive = (image > 0).reshape(-1, nz).any(axis=0)  # max-normalisation needs a positive voxel
    keep = np.flatnonzero(positive)
    if not len(keep):
        raise DataError(item.paths[0], "no slice has a positive voxel", "check the input")
    heat = np.zeros((nx, ny, nz, k_classes), np.float32)
    mask = np.zeros((nx, ny, nz), np.uint8)
    scale = math.sqrt(nx * ny) / REFERENCE_SIZE
    rows = []
    probs_all, preds_all = [], []
    step = max(pred.batch_size, 1)
    for start in range(0, len(keep), step):
        ks = keep[start:start + step]
        probs, maps = pred.predict(np.moveaxis(image[..., ks], -1, 0), (nx, ny),
                                   spacing[:2])
        for k, p, m in zip(ks, probs, maps):
            c = int(np.argmax(p))
            heat[:, :, k, :] = np.moveaxis(m, 0, -1)
            mask[:, :, k] = pred.rule.mask(m, c, pred.healthy, scale, image=image[..., k])
            rows.append({"slice_index": int(k), "pred_class": pred.classes[c],
                         **{f"prob_{name}": float(v) for name, v in zip(pred.classes, p)},
                         "mask_area": int(mask[:, :, k].sum())})
            probs_all.append(p)
            preds_all.append(c)
    probs_all, preds_all = np.asarray(probs_all), np.asarray(preds_all)
    patient = patient_class(probs_all, pred.classes, pred.healthy)
    sid = item.subject_id
    # written in the input's own voxel order, with its affine and header
    nib.save(nifti_like(apply_orientation(heat, back), ref, np.float32),
             folder / f"{sid}_heatmap.nii.gz")
    nib.save(nifti_like(apply_orientation(mask, back), ref, np.uint8), folder / f"{sid}_mask.nii.gz")
    pd.DataFrame(rows).to_csv(folder / f"{sid}_slices.csv", index=False)
    voxels = int(mask.sum())
    zooms = [float(z) for z in ref.header.get_zooms()[:3]]
    n_tumour = int((preds_all != pred.healthy).sum()) if pred.healthy is not None else None
    summary = {
        "subject_id": sid, "inputs": [str(p) for p in item.paths],
        "predicted_class": patient.name, "tumour_class": patient.tumour_class,
        "rule": PATIENT_RULE, "class_scores": patient.shares,
        "n_slices_aggregated": patient.n_slices_used,
        "aggregated_over": patient.aggregated_over,
        "n_slices": int(nz), "n_empty_slices": int(nz - len(keep)),
        "n_tumour_slices": n_tumour,
        "tumour_volume_voxels": voxels,
        "tumour_volume_ml": voxels * float(np.prod(zooms)) / 1000.0,
        "voxel_size_mm": zooms,
        "checkpoint": pred.checkpoint, "model": pred.name,
        "classes": pred.classes,
        "classes_source": "checkpoint" if pred.classes_recorded else "assumed (not recorded)",
        "contrasts": list(contrasts) if item.subject is not None else f"{n_contrasts} "
                     f"channel(s) of {item.paths[0].name}, in the model's order",
        "threshold": pred.rule.threshold, "offset": pred.rule.offset,
        "cleanup": pred.rule.cleanup, "cleanup_scale": scale,
        "map_rule": pred.rule.rule, "in_brain": pred.rule.in_brain,
        "mask_rule_source": pred.rule_source,
        "input_size": pred.input_size, "native_size": [int(nx), int(ny)],
        "input_orientation": "".join(nib.aff2axcodes(ref.affine)),
        "fov_padding_voxels": [list(p) for p in square_fov((nx, ny), spacing[:2])],
        "slice_axis": f"axial slices of the volume reoriented to "
                      f"{''.join(TRAINING_AXCODES)} (the training data's voxel axes); "
                      f"slice_index counts from inferior",
        "normalisation": pred.normalisation,
        "mask_rule": "multi-Otsu (3 classes) upper threshold minus offset (floor 0) on the "
                     f"{pred.rule.rule!r} map (gpcore.inference.maps)"
                     + (" inside the brain (non-zero input)" if pred.rule.in_brain else "")
                     + ", Otsu fallback; empty when predicted "
                     + (pred.classes[pred.healthy] if pred.healthy is not None else "(n/a)"),
    }
    (folder / f"{sid}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    display = (list(contrasts).index("flair") if item.subject is not None and "flair" in contrasts
               else n_contrasts - 1)
    pred_heat = np.zeros((nx, ny, nz), np.float32)
    for r, c in zip(rows, preds_all):
        pred_heat[:, :, r["slice_index"]] = heat[:, :, r["slice_index"], c]
    write_overview(folder / f"{sid}_overview.png", image, pred_heat, mask,
              {r["slice_index"]: r["pred_class"] for r in rows}, display, sid)
    return summary


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------
def segment(checkpoint: str | os.PathLike, inputs: str | os.PathLike, out_dir: str | os.PathLike,
            offset: float | None = None, contrasts: Sequence[str] = BRATS_CONTRASTS,
            batch_size: int = 16, device: str = "cpu", cleanup: bool = True,
            progress: bool = True, on_error: str = "stop", map_rule: str | None = None,
            in_brain: bool | None = None) -> pd.DataFrame:
    """Classify and segment every subject in ``inputs``; return one row per segmented subject.

    Args:
        checkpoint: model weights saved with ``save_model`` (its JSON gives the training input
            size, normalisation, classes and channels), a foreign checkpoint, or a released
            model ``hf://owner/name[@revision]`` (published input size, normalisation, classes,
            contrasts and offset; :mod:`gpcore.models.hub`).
        inputs: see the module docstring.
        offset: subtracted from the multi-Otsu threshold. Default: the map rule, offset and
            clean-up chosen on validation when the checkpoint sits in an evaluated run folder
            (:func:`mask_rule_for`), else the published ones
            (:data:`gpcore.inference.PUBLISHED_OFFSETS`). ``summary.json`` says which.
        map_rule, in_brain: override the map rule / brain restriction
            (:mod:`gpcore.inference.maps`).
        contrasts: channel order for subject folders (must match the checkpoint's channels
            when recorded).
        cleanup: the published mask clean-up.
        on_error: ``"stop"`` raises the first :class:`DataError`; ``"skip"`` goes on and lists
            the problem in ``out_dir/skipped.csv``.
    """
    from tqdm.auto import tqdm

    check_on_error(on_error)
    contrasts = tuple(str(c).lower() for c in contrasts)
    pred = _load_predictor(checkpoint, offset, device, batch_size, cleanup, map_rule, in_brain)
    skipped: list[DataError] = []
    items = discover_inputs(inputs, contrasts, on_error, skipped)
    if pred.channels and any(i.subject is not None for i in items) \
            and list(contrasts) != [c.lower() for c in pred.channels]:
        raise ValueError(f"{checkpoint}: the model was trained on contrasts "
                         f"{','.join(pred.channels)}, got {','.join(contrasts)}; pass "
                         f"--contrasts {','.join(pred.channels)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for item in tqdm(items, desc="segmenting", unit="subject", disable=not progress):
        tmp = out / f".{item.subject_id}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            summary = _segment_one(item, pred, tmp, contrasts)
            publish_dir(tmp, out / item.subject_id)
        except DataError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            report(err, on_error, skipped)
            continue
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        summaries.append({"subject_id": item.subject_id,
                          "predicted_class": summary["predicted_class"],
                          "n_slices": summary["n_slices"],
                          "n_tumour_slices": summary["n_tumour_slices"],
                          "tumour_volume_voxels": summary["tumour_volume_voxels"],
                          "tumour_volume_ml": summary["tumour_volume_ml"],
                          "output": str(out / item.subject_id)})
    if skipped:
        with atomic_path(out / "skipped.csv") as tmp_csv:
            pd.DataFrame([{"input": e.path, "problem": str(e)} for e in skipped]).to_csv(
                tmp_csv, index=False)
    table = pd.DataFrame(summaries, columns=["subject_id", "predicted_class", "n_slices",
                                             "n_tumour_slices", "tumour_volume_voxels",
                                             "tumour_volume_ml", "output"])
    with atomic_path(out / "subjects.csv") as tmp_csv:
        table.to_csv(tmp_csv, index=False)
    return table


def add_cli(sub: argparse._SubParsersAction) -> None:
    from .predict import CHECKPOINT_HELP

    p = sub.add_parser("segment", help="classify and segment MRI volumes with a trained model "
                                       "(heatmap, mask, per-slice classes, patient class)")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--input", required=True, help="folder of subject folders, one subject "
                                                  "folder, a NIfTI volume or a folder of them")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per subject)")
    p.add_argument("--offset", type=float, help="threshold offset (default: the one chosen on "
                   "validation for the checkpoint's run folder, else the model's published one)")
    p.add_argument("--map-rule", choices=MAP_RULES, help="map thresholded (default: as chosen "
                   "on validation, else 'predicted', as published)")
    p.add_argument("--brain-only", action="store_true", default=None,
                   help="threshold inside the brain (non-zero input) only")
    p.add_argument("--contrasts", default=",".join(BRATS_CONTRASTS),
                   help="channel order of subject folders (default t1,t2,t1ce,flair)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--no-cleanup", action="store_true", help="skip the mask clean-up")
    p.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                   help="stop at the first bad input (default) or skip it and report")
    p.set_defaults(func=_segment_cli)


def _segment_cli(args) -> int:
    table = segment(args.checkpoint, args.input, args.out, offset=args.offset,
                    contrasts=tuple(args.contrasts.split(",")), batch_size=args.batch_size,
                    device=args.device, cleanup=not args.no_cleanup, on_error=args.on_error,
                    map_rule=args.map_rule, in_brain=args.brain_only)
    print(table.drop(columns="output").to_string(index=False))
    if (Path(args.out) / "skipped.csv").is_file():
        print(f"skipped inputs are listed in {Path(args.out) / 'skipped.csv'}")
    return 0
