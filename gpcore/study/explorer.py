"""Interactive threshold explorer: how the heatmap -> mask offset and clean-up shape the
weakly-supervised segmentation of evaluated runs.

* :class:`ThresholdExplorer` is the pure logic (no widgets): built from evaluated run folders
  ``{model_name: RUN_DIR}`` (``gpcore evaluate`` done), it loads lazily each run's test
  predictions (``RUN/predictions/test``), the store's images and masks (``RUN/config.yaml``
  ``store.path``) and the validation-chosen offset (``RUN/evaluation/offset_choice.json``).
  Its state is (model, patient, slice, offset, clean-up, channel); for that state it returns
  the image, the heatmap channel, the thresholded mask (:mod:`gpcore.inference.threshold`,
  the published rule), the ground truth, the slice Dice and the cohort median Dice over all
  test tumour slices (:func:`gpcore.evaluation.segmentation.score_slices`, cached per
  (model, offset, clean-up, channel)).
* :func:`build_explorer` wraps it in an ipywidgets UI whose callbacks only set the logic's
  state and redraw; the widgets are exposed as ``ui.widgets[...]`` so tests can drive them
  without a Jupyter kernel.

Channels: ``"predicted"`` (the predicted class's heatmap, as published and as ``gpcore
evaluate`` scores), ``"true"`` (the true class's: localisation without classification errors)
or a class name (that class's heatmap on every slice). As in ``score_slices``, under
"predicted" / "true" a slice whose channel class is Healthy gets the empty mask; a class name
thresholds that channel whatever it is (Healthy included).
"""
from __future__ import annotations

import base64
import io
from functools import cached_property
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ..data.store import SliceStore
from ..evaluation.segmentation import dice_iou, score_slices
from ..inference.maps import MAP_RULES, brain_masks, tumour_map
from ..inference.predict import predictions_complete, read_predictions
from ..rundir import RunDir, healthy_index
from ..inference.threshold import (PUBLISHED_OFFSETS, THRESHOLDS, check_threshold,
                                     mask_from_rule, rule_threshold, threshold_rule)

#: offset slider range and step (that of ``gpcore.evaluation.segmentation.DEFAULT_OFFSETS``)
OFFSET_MIN, OFFSET_MAX, OFFSET_STEP = 0.0, 2.0, 0.05


class EvaluatedRun:
    """One evaluated run folder, read lazily (predictions of ``part``, store, offset choice)."""

    def __init__(self, run_dir: str | Path, part: str = "test"):
        self.run = RunDir(run_dir)
        self.path = self.run.path
        self.part = part
        folder = self.run.predictions(part)
        for needed, present in ((self.run.config_file, self.run.config_file.is_file()),
                                (folder / "predict.json", predictions_complete(folder))):
            if not present:
                raise FileNotFoundError(f"{self.path}: not an evaluated run (missing {needed}); "
                                        f"run `gpcore evaluate {self.path}` first")
        self._predictions = read_predictions(folder)

    @cached_property
    def record(self) -> dict:
        return self.run.record

    @cached_property
    def model_name(self) -> str:
        return str(self.record.get("config", {}).get("model", {}).get("name", self.path.name))

    @cached_property
    def store(self) -> SliceStore:
        return SliceStore(self.run.store_path)

    @cached_property
    def classes(self) -> list[str]:
        return list(self.record.get("classes") or self.store.classes)

    @cached_property
    def healthy_class(self) -> int | None:
        return healthy_index(self.classes)

    @cached_property
    def channel_names(self) -> list[str]:
        return list(self.store.meta.get("channels") or [])

    @cached_property
    def index(self) -> pd.DataFrame:
        """The predictions' index: one row per predicted slice (``row`` is the store row)."""
        return self._predictions["index"]

    @cached_property
    def probabilities(self) -> np.ndarray:
        return self._predictions["probabilities"]

    @cached_property
    def heatmaps(self) -> np.ndarray:
        """``(N, K, H, W)`` memory-mapped."""
        return self._predictions["heatmaps"]

    @cached_property
    def labels(self) -> np.ndarray:
        return self.index["label"].to_numpy()

    @cached_property
    def masks(self) -> np.ndarray:
        """Ground-truth sub-region labels ``(N, H, W)`` of the predicted slices (in memory)."""
        return np.asarray(self.store.masks[self.index["row"].to_numpy()])

    @cached_property
    def brain(self) -> np.ndarray:
        """Brain (non-zero input) masks ``(N, H, W)`` of the predicted slices."""
        return brain_masks(self.store.images, self.index["row"].to_numpy())

    @cached_property
    def tumour_rows(self) -> np.ndarray:
        """Prediction rows whose ground truth has tumour (the cohort of the median Dice)."""
        return np.flatnonzero(self.masks.reshape(len(self.masks), -1).any(axis=1))

    @cached_property
    def scale(self) -> float:
        """Clean-up scale of ``score_slices`` (``H / 240``)."""
        return self.heatmaps.shape[-2] / 240

    @cached_property
    def patients(self) -> list[str]:
        return sorted(self.index["patient_id"].unique())

    @cached_property
    def _patient_rows(self) -> dict[str, np.ndarray]:
        """Prediction rows of each patient, ordered by slice index."""
        order = "slice_index" if "slice_index" in self.index.columns else "row"
        table = self.index.reset_index(names="_pos").sort_values(["patient_id", order],
                                                                 kind="stable")
        return {p: g["_pos"].to_numpy() for p, g in table.groupby("patient_id", sort=False)}

    def patient_rows(self, patient: str) -> np.ndarray:
        return self._patient_rows[patient]

    def offset_choice(self, channel: str = "predicted") -> dict:
        """``offset_choice.json`` of ``evaluation/`` (or ``evaluation_true_class/`` for the
        true channel, when evaluated so); ``{}`` when absent."""
        for ch in (["true", "predicted"] if channel == "true" else ["predicted"]):
            if self.run.is_evaluated(ch):
                return self.run.offset_choice(ch)
        return {}

    @property
    def published_offset(self) -> float | None:
        return self.offset_choice().get("published_offset", PUBLISHED_OFFSETS.get(
            self.model_name))


class ThresholdExplorer:
    """State and results of the threshold explorer (no widgets; see :func:`build_explorer`).

    Args:
        runs: ``{model_name: run_dir}`` of evaluated runs (or a list of run folders, named by
            their ``config.yaml`` model name).
        contrast: the image channel shown (``"t1ce"`` by default, channel 0 when the store
            has no such channel name).
        part: the predictions part explored (``"test"``).
        workers: processes of :func:`score_slices` (``None``: its default).

    State attributes (set through :meth:`set` or the ``set_*`` methods, which keep them
    consistent): ``model``, ``patient``, ``slice`` (position within the patient's slices),
    ``offset``, ``cleanup``, ``channel``. Changing the model resets offset and clean-up to
    that model's validation-chosen values; changing the patient resets the slice to the
    patient's slice with the largest tumour.
    """

    def __init__(self, runs: Mapping[str, str | Path] | list, contrast: str = "t1ce",
                 part: str = "test", workers: int | None = None):
        if not isinstance(runs, Mapping):
            loaded = [EvaluatedRun(r, part) for r in runs]
            runs = {r.model_name: r for r in loaded}
        self.runs: dict[str, EvaluatedRun] = {
            str(name): r if isinstance(r, EvaluatedRun) else EvaluatedRun(r, part)
            for name, r in runs.items()}
        if not self.runs:
            raise ValueError("ThresholdExplorer needs at least one evaluated run")
        self.contrast = contrast
        self.workers = workers
        self._cohort: dict[tuple, pd.DataFrame] = {}
        self._rules: dict[tuple, tuple[str, float]] = {}
        self.model = self.patient = None
        self.slice, self.offset, self.cleanup, self.channel = 0, 0.0, True, "predicted"
        self.map_rule, self.in_brain, self.thresholding = "predicted", False, "multiotsu"
        self.set_model(next(iter(self.runs)))

    # ---------------------------------------------------------------------------- state
    @property
    def models(self) -> list[str]:
        return list(self.runs)

    @property
    def run(self) -> EvaluatedRun:
        return self.runs[self.model]

    @property
    def patients(self) -> list[str]:
        return self.run.patients

    @property
    def classes(self) -> list[str]:
        return self.run.classes

    @property
    def channels(self) -> list[str]:
        """Channel options: ``"predicted"``, ``"true"``, then the class names."""
        return ["predicted", "true", *self.classes]

    @property
    def n_slices(self) -> int:
        """Number of slices of the current patient (the slice slider's range)."""
        return len(self.run.patient_rows(self.patient))

    @property
    def chosen_offset(self) -> float:
        fallback = self.published_offset  # runs evaluated before offset_choice.json existed
        return float(self.run.offset_choice(self.channel).get(
            "offset", 0.3 if fallback is None else fallback))

    @property
    def chosen_cleanup(self) -> bool:
        return bool(self.run.offset_choice(self.channel).get("cleanup", True))

    @property
    def chosen_map_rule(self) -> str:
        return str(self.run.offset_choice(self.channel).get("rule", "predicted"))

    @property
    def chosen_in_brain(self) -> bool:
        return bool(self.run.offset_choice(self.channel).get("in_brain", False))

    @property
    def chosen_thresholding(self) -> str:
        return str(self.run.offset_choice(self.channel).get("threshold", "multiotsu"))

    @property
    def published_offset(self) -> float | None:
        return self.run.published_offset

    def set_model(self, model: str) -> None:
        if model not in self.runs:
            raise ValueError(f"unknown model {model!r}; choose one of {self.models}")
        self.model = model
        if self.channel not in self.channels:
            self.channel = "predicted"
        self.offset, self.cleanup = self.chosen_offset, self.chosen_cleanup
        self.map_rule, self.in_brain = self.chosen_map_rule, self.chosen_in_brain
        self.thresholding = self.chosen_thresholding
        self.set_patient(self.patient if self.patient in self.patients else
                         self._default_patient())

    def set_patient(self, patient: str) -> None:
        if patient not in self.patients:
            raise ValueError(f"patient {patient!r} has no {self.run.part} slices for "
                             f"{self.model}")
        self.patient = patient
        rows = self.run.patient_rows(patient)
        areas = (self.run.masks[rows] > 0).reshape(len(rows), -1).sum(axis=1)
        self.slice = int(np.argmax(areas))  # the largest tumour (the first slice if none)

    def set_slice(self, position: int) -> None:
        position = int(position)
        if not 0 <= position < self.n_slices:
            raise ValueError(f"slice must be in 0..{self.n_slices - 1} for patient "
                             f"{self.patient}, got {position}")
        self.slice = position

    def set_offset(self, offset: float) -> None:
        self.offset = round(float(offset), 6)  # slider floats, e.g. 0.30000000000000004

    def set_cleanup(self, cleanup: bool) -> None:
        self.cleanup = bool(cleanup)

    def set_map_rule(self, rule: str) -> None:
        if rule not in MAP_RULES:
            raise ValueError(f"map rule must be one of {MAP_RULES}, got {rule!r}")
        self.map_rule = rule

    def set_in_brain(self, in_brain: bool) -> None:
        self.in_brain = bool(in_brain)

    def set_thresholding(self, method: str) -> None:
        """``"multiotsu"`` (published; the offset is subtracted) or ``"relative"`` (the
        offset is the fraction f from the median to the peak)."""
        self.thresholding = check_threshold(method)

    def set_channel(self, channel: str) -> None:
        if channel not in self.channels:
            raise ValueError(f"channel must be one of {self.channels}, got {channel!r}")
        self.channel = channel

    def set(self, **state) -> None:
        """Set several state fields at once, in the order model, patient, slice, channel,
        map_rule, in_brain, thresholding, offset, cleanup (so a later field is not reset by
        an earlier one)."""
        order = ("model", "patient", "slice", "channel", "map_rule", "in_brain",
                 "thresholding", "offset", "cleanup")
        unknown = set(state) - set(order)
        if unknown:
            raise TypeError(f"unknown state fields {sorted(unknown)}")
        for key in order:
            if key in state:
                getattr(self, f"set_{key}")(state[key])

    def _default_patient(self) -> str:
        """The first patient (sorted) with a tumour slice, else the first patient."""
        with_tumour = set(self.run.index["patient_id"].to_numpy()[self.run.tumour_rows])
        return next((p for p in self.patients if p in with_tumour), self.patients[0])

    # ---------------------------------------------------------------------------- slice
    @property
    def row(self) -> int:
        """Row of the current slice in the predictions arrays."""
        return int(self.run.patient_rows(self.patient)[self.slice])

    @property
    def store_row(self) -> int:
        return int(self.run.index["row"].iat[self.row])

    @property
    def slice_info(self) -> dict:
        """Index entry of the current slice plus the predicted class and its probability."""
        entry = self.run.index.iloc[self.row]
        prob = self.run.probabilities[self.row]
        pred = int(np.argmax(prob))
        return {"patient_id": self.patient, "position": self.slice,
                "slice_index": int(entry.get("slice_index", self.slice)),
                "store_row": self.store_row, "label": int(entry["label"]),
                "true_class": self.classes[int(entry["label"])], "pred": pred,
                "pred_class": self.classes[pred], "prob_pred": float(prob[pred])}

    @property
    def contrast_index(self) -> int:
        names = self.run.channel_names
        return names.index(self.contrast) if self.contrast in names else 0

    def image(self) -> np.ndarray:
        """The shown contrast of the current slice, ``(H, W)`` float32."""
        return np.asarray(self.run.store.images[self.store_row, self.contrast_index], np.float32)

    def channel_class(self) -> int | None:
        """Class index of the thresholded heatmap channel; ``None`` when the mask is empty by
        convention (predicted / true class is Healthy, as ``score_slices``)."""
        info = self.slice_info
        if self.channel in ("predicted", "true"):
            k = info["pred"] if self.channel == "predicted" else info["label"]
            return None if k == self.run.healthy_class else k
        return self.classes.index(self.channel)

    def _shown_class(self) -> int:
        info = self.slice_info
        if self.channel in ("predicted", "true"):
            return info["pred"] if self.channel == "predicted" else info["label"]
        return self.classes.index(self.channel)

    def heatmap(self) -> np.ndarray:
        """The map thresholded for the current slice, ``(H, W)`` float32: under the predicted
        / true channel the map rule's map of that class (for Healthy its own channel is shown
        even though its mask is empty), else the named class's channel."""
        hms = np.asarray(self.run.heatmaps[self.row], np.float32)
        if self.channel in ("predicted", "true"):
            k = self._shown_class()
            hm = tumour_map(hms, k, self.map_rule, self.run.healthy_class)
            return hms[k] if hm is None else hm
        return hms[self.classes.index(self.channel)]

    def region(self) -> np.ndarray | None:
        """The brain of the current slice when the mask is restricted to it, else ``None``."""
        return self.run.brain[self.row] if self.in_brain else None

    def rule(self) -> tuple[str, float]:
        """:func:`threshold_rule` of the current heatmap (cached: offset-independent)."""
        key = (self.model, self.row, self._shown_class(), self.channel, self.map_rule,
               self.in_brain, self.thresholding)
        if key not in self._rules:
            self._rules[key] = threshold_rule(self.heatmap(), self.region(), self.thresholding)
        return self._rules[key]

    def threshold(self) -> float | None:
        """The threshold ``thr`` of the current mask (``mask = heatmap > thr``); ``None`` for
        an empty mask whatever the threshold."""
        if self.channel_class() is None:
            return None
        return rule_threshold(self.rule(), self.offset)

    def mask(self) -> np.ndarray:
        """The thresholded (and optionally cleaned) mask of the current slice, ``(H, W)``."""
        hm = self.heatmap()
        if self.channel_class() is None:
            return np.zeros(hm.shape, bool)
        return mask_from_rule(hm, self.rule(), self.offset, self.cleanup, self.run.scale,
                              self.region())

    def ground_truth_labels(self) -> np.ndarray:
        """Sub-region labels of the current slice (BraTS 0/1/2/4, 2D datasets 0/1)."""
        return np.asarray(self.run.masks[self.row])

    def ground_truth(self) -> np.ndarray:
        """Whole-tumour ground truth of the current slice, ``(H, W)`` bool."""
        return self.ground_truth_labels() > 0

    def slice_dice(self) -> float:
        """Dice of :meth:`mask` against :meth:`ground_truth` (nan when both are empty)."""
        return dice_iou(self.mask(), self.ground_truth())[0]

    # ---------------------------------------------------------------------------- cohort
    def cohort_key(self) -> tuple:
        return (self.model, self.offset, self.cleanup, self.channel, self.map_rule,
                self.in_brain, self.thresholding)

    def cohort_scores(self) -> pd.DataFrame:
        """:func:`score_slices` of every tumour slice of the model's test patients at the
        current offset / clean-up / channel (cached per :meth:`cohort_key`)."""
        key = self.cohort_key()
        if key not in self._cohort:
            run = self.run
            labels, healthy, channel = run.labels, run.healthy_class, self.channel
            rule = self.map_rule
            if channel not in ("predicted", "true"):  # one class's channel on every slice
                labels = np.full(len(run.labels), self.classes.index(channel))
                healthy, channel, rule = None, "true", "predicted"
            self._cohort[key] = score_slices(
                run.heatmaps, run.probabilities, run.masks, labels, offset=self.offset,
                cleanup=self.cleanup, channel=channel, healthy_class=healthy,
                scale=run.scale, rows=run.tumour_rows, workers=self.workers, rule=rule,
                in_brain=self.in_brain, brain=run.brain if self.in_brain else None,
                threshold=self.thresholding)
        return self._cohort[key]

    def cohort_median_dice(self) -> float:
        """Median slice Dice over all test tumour slices of the current model."""
        dice = self.cohort_scores()["dice"].to_numpy()
        return float(np.median(dice)) if len(dice) else float("nan")

    def summary(self) -> dict:
        """Everything the UI prints for the current state."""
        mask, gt = self.mask(), self.ground_truth()
        return {**self.slice_info, "model": self.model, "offset": self.offset,
                "cleanup": self.cleanup, "channel": self.channel,
                "channel_class": self.channel_class(), "threshold": self.threshold(),
                "mask_area": int(mask.sum()), "gt_area": int(gt.sum()),
                "slice_dice": dice_iou(mask, gt)[0],
                "cohort_median_dice": self.cohort_median_dice(),
                "cohort_slices": len(self.cohort_scores()),
                "map_rule": self.map_rule, "in_brain": self.in_brain,
                "thresholding": self.thresholding,
                "chosen_thresholding": self.chosen_thresholding,
                "chosen_map_rule": self.chosen_map_rule,
                "chosen_in_brain": self.chosen_in_brain,
                "chosen_offset": self.chosen_offset, "chosen_cleanup": self.chosen_cleanup,
                "published_offset": self.published_offset}

    # ---------------------------------------------------------------------------- figure
    def draw(self, fig=None):
        """Draw the current view (image, heatmap with threshold contour, mask vs ground
        truth) into ``fig`` (cleared; a new figure when ``None``); returns the figure."""
        import matplotlib.pyplot as plt

        from ..data.figures import overlay

        s = self.summary()
        if fig is None:
            fig = plt.figure(figsize=(9, 3.3))
        fig.clear()
        # a fixed layout (tight_layout would double the cost of a redraw)
        axes = fig.subplots(1, 3, gridspec_kw={"left": 0.01, "right": 0.99, "bottom": 0.02,
                                               "top": 0.8, "wspace": 0.12})
        img, hm, mask, gt = self.image(), self.heatmap(), self.mask(), self.ground_truth()
        contrast = (self.run.channel_names[self.contrast_index].upper()
                    if self.run.channel_names else f"channel {self.contrast_index}")
        overlay(axes[0], img, self.ground_truth_labels(), alpha=0.3)
        axes[0].set_title(f"{contrast}, truth overlaid\n{s['patient_id']} slice "
                          f"{s['slice_index']} ({s['true_class']})", fontsize=8)
        im = axes[1].imshow(hm, cmap="inferno", interpolation="nearest")
        bar = fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.02)
        bar.ax.tick_params(labelsize=6)
        if s["threshold"] is not None and hm.min() <= s["threshold"] <= hm.max():
            bar.ax.axhline(s["threshold"], color="cyan", linewidth=1.2)  # where thr lies
        if mask.any():
            axes[1].contour(mask, levels=[0.5], colors="cyan", linewidths=0.8)
        thr = "empty mask" if s["threshold"] is None else f"thr {s['threshold']:.3g}"
        mode = "" if self.channel not in ("predicted", "true") else \
            f" ({self.channel} class, {self.map_rule} map{', brain' if self.in_brain else ''})"
        axes[1].set_title(f"heatmap: {self.classes[self._shown_class()]}{mode}\n"
                          f"{thr}, pred {s['pred_class']} p={s['prob_pred']:.2f}", fontsize=8)
        axes[1].set_axis_off()
        axes[2].imshow(img, cmap="gray", interpolation="nearest")
        rgba = np.zeros((*mask.shape, 4))
        rgba[mask] = (1.0, 0.1, 0.1, 0.45)
        axes[2].imshow(rgba, interpolation="nearest")
        if gt.any():
            axes[2].contour(gt, levels=[0.5], colors="cyan", linewidths=0.9)
        dice = "n/a" if np.isnan(s["slice_dice"]) else f"{s['slice_dice']:.3f}"
        axes[2].set_title(f"mask (red) vs truth (cyan)\nDice {dice}, offset {self.offset:.2f}"
                          f", clean-up {'on' if self.cleanup else 'off'}", fontsize=8)
        axes[2].set_axis_off()
        fig.suptitle(f"{self.model}: cohort median Dice {s['cohort_median_dice']:.3f} over "
                     f"{s['cohort_slices']} {self.run.part} tumour slices", fontsize=9)
        return fig


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


class ExplorerUI:
    """The widgets of :func:`build_explorer`: ``widgets`` (by name), ``box`` (the layout to
    display), ``state`` (the :class:`ThresholdExplorer`), ``figure`` (the matplotlib figure
    last drawn), ``draw_count`` (redraws so far)."""

    def __init__(self, state: ThresholdExplorer, dpi: int = 90):
        import ipywidgets as w

        from matplotlib.figure import Figure

        self.state, self.dpi, self.draw_count, self._syncing = state, dpi, 0, False
        # drawn off-screen (no pyplot state: the notebook shows it once, through the Output)
        self.figure = Figure(figsize=(9, 3.3))
        desc = {"description_width": "70px"}
        self.widgets = {
            "model": w.Dropdown(options=state.models, value=state.model, description="model",
                                style=desc),
            "patient": w.Dropdown(options=state.patients, value=state.patient,
                                  description="patient", style=desc),
            "channel": w.Dropdown(options=state.channels, value=state.channel,
                                  description="channel", style=desc),
            "slice": w.IntSlider(value=state.slice, min=0, max=state.n_slices - 1,
                                 description="slice", continuous_update=False, style=desc),
            "offset": w.FloatSlider(value=state.offset, min=OFFSET_MIN,
                                    max=max(OFFSET_MAX, state.offset), step=OFFSET_STEP,
                                    description="offset", readout_format=".2f",
                                    continuous_update=False, style=desc),
            "cleanup": w.Checkbox(value=state.cleanup, description="clean-up"),
            "map_rule": w.Dropdown(options=list(MAP_RULES), value=state.map_rule,
                                   description="map", style=desc),
            "in_brain": w.Checkbox(value=state.in_brain, description="brain only"),
            "thresholding": w.Dropdown(options=list(THRESHOLDS), value=state.thresholding,
                                       description="threshold", style=desc),
            "use_chosen": w.Button(description="validation-chosen"),
            "use_published": w.Button(description="published"),
            "offsets": w.HTML(),
            "scores": w.HTML(),
            "output": w.Output(),
        }
        ws = self.widgets
        for name in ("model", "patient", "channel", "slice", "offset", "cleanup", "map_rule",
                     "in_brain", "thresholding"):
            ws[name].observe(self._on_change(name), names="value")
        ws["use_chosen"].on_click(lambda _: self._apply(
            offset=state.chosen_offset, cleanup=state.chosen_cleanup,
            map_rule=state.chosen_map_rule, in_brain=state.chosen_in_brain,
            thresholding=state.chosen_thresholding))
        ws["use_published"].on_click(lambda _: self._apply(
            offset=state.published_offset, map_rule="predicted", in_brain=False,
            thresholding="multiotsu")
            if state.published_offset is not None else None)
        self.box = w.VBox([
            w.HBox([ws["model"], ws["patient"], ws["channel"]]),
            w.HBox([ws["slice"], ws["cleanup"]]),
            w.HBox([ws["map_rule"], ws["in_brain"], ws["thresholding"]]),
            w.HBox([ws["offset"], ws["use_chosen"], ws["use_published"]]),
            ws["offsets"], ws["scores"], ws["output"]])
        self.refresh()

    # ---------------------------------------------------------------------------- callbacks
    def _on_change(self, name: str):
        def callback(change):
            if not self._syncing:
                self._apply(**{name: change["new"]})
        return callback

    def _apply(self, **state) -> None:
        """Set the logic's state, then bring every widget and the view in line with it."""
        self.state.set(**state)
        self.refresh()

    def _sync_widgets(self) -> None:
        s, ws = self.state, self.widgets
        self._syncing = True
        try:
            ws["model"].value = s.model
            if list(ws["patient"].options) != s.patients:
                ws["patient"].options = s.patients
            ws["patient"].value = s.patient
            if list(ws["channel"].options) != s.channels:
                ws["channel"].options = s.channels
            ws["channel"].value = s.channel
            ws["slice"].max = max(0, s.n_slices - 1)  # max first: value may exceed old max
            ws["slice"].value = s.slice
            ws["offset"].max = max(OFFSET_MAX, s.offset, s.published_offset or 0.0)
            ws["offset"].value = s.offset
            ws["cleanup"].value = s.cleanup
            ws["map_rule"].value = s.map_rule
            ws["in_brain"].value = s.in_brain
            ws["thresholding"].value = s.thresholding
            ws["use_published"].disabled = s.published_offset is None
        finally:
            self._syncing = False

    def refresh(self) -> None:
        """Sync the widgets to the logic's state, update the labels and redraw."""
        self._sync_widgets()
        s, summary = self.state, self.state.summary()
        published = (f"{summary['published_offset']:.2f}" if summary["published_offset"]
                     is not None else "n/a")
        marker = ("◀ validation-chosen" if np.isclose(s.offset, summary["chosen_offset"])
                  else "◀ published" if summary["published_offset"] is not None
                  and np.isclose(s.offset, summary["published_offset"]) else "")
        self.widgets["offsets"].value = (
            f"offset <b>{s.offset:.2f}</b> {marker} &nbsp;|&nbsp; validation-chosen "
            f"<b>{summary['chosen_offset']:.2f}</b> ({summary['chosen_map_rule']} map"
            f"{', brain only' if summary['chosen_in_brain'] else ''}, "
            f"{summary['chosen_thresholding']} threshold, clean-up "
            f"{'on' if summary['chosen_cleanup'] else 'off'}) &nbsp;|&nbsp; published "
            f"<b>{published}</b>")
        self.widgets["scores"].value = (
            f"slice Dice <b>{_fmt(summary['slice_dice'])}</b> (mask {summary['mask_area']} px, "
            f"truth {summary['gt_area']} px) &nbsp;|&nbsp; cohort median Dice "
            f"<b>{_fmt(summary['cohort_median_dice'])}</b> over {summary['cohort_slices']} "
            f"{s.run.part} tumour slices ({s.model}, offset {s.offset:.2f}, clean-up "
            f"{'on' if s.cleanup else 'off'}, {s.channel} channel, {s.map_rule} map"
            f"{', brain only' if s.in_brain else ''})")
        self.last_summary = summary
        self.redraw()

    def redraw(self) -> None:
        """Draw the current view into :attr:`figure` and show it as a PNG in the Output
        (set as its content, so it also works without a kernel)."""
        self.state.draw(self.figure)
        png = self.png()
        self.widgets["output"].outputs = ({
            "output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(png).decode("ascii"),
                     "text/plain": f"<threshold explorer view {self.draw_count + 1}>"}},)
        self.draw_count += 1

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=self.dpi)
        return buf.getvalue()

    def save(self, path: str | Path, dpi: int = 150) -> Path:
        """Save the current view as a static image (format from the suffix)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure.savefig(path, dpi=dpi)
        return path

    def _ipython_display_(self):
        from IPython.display import display

        display(self.box)


def build_explorer(runs, contrast: str = "t1ce", part: str = "test",
                   workers: int | None = None, dpi: int = 90) -> ExplorerUI:
    """The ipywidgets threshold explorer of evaluated runs ``{model_name: run_dir}`` (or a
    :class:`ThresholdExplorer`). Display the result (or its ``box``) in a notebook.

    Widgets (``ui.widgets``): ``model``, ``patient``, ``channel`` (Dropdowns), ``slice``
    (IntSlider, positions within the patient's slices), ``offset`` (FloatSlider, starts at the
    validation-chosen offset), ``cleanup`` (Checkbox), ``use_chosen`` / ``use_published``
    (Buttons setting the offset), ``offsets`` (HTML: current, chosen and published offsets),
    ``scores`` (HTML: slice Dice and cohort median Dice), ``output`` (Output: the figure).
    ``dpi``: resolution of the figure shown in the Output."""
    state = runs if isinstance(runs, ThresholdExplorer) else ThresholdExplorer(
        runs, contrast, part, workers)
    return ExplorerUI(state, dpi)


def find_evaluated_runs(runs_dir: str | Path, fold: int | None = None) -> dict[str, Path]:
    """``{model: RUN}`` of the evaluated runs ``runs_dir/<model>/fold<fold>``, models sorted
    with the published ones first; ``fold=None``: the lowest fold with an evaluated run (a
    study run with ``--folds 2,3`` has no fold 0)."""
    root = Path(runs_dir)
    pattern = "*/fold*" if fold is None else f"*/fold{fold}"
    complete = [p for p in sorted(root.glob(pattern)) if p.name[4:].isdigit()
                and predictions_complete(RunDir(p).predictions("test"))]
    if fold is None:
        fold = min((int(p.name[4:]) for p in complete), default=0)
    found = {p.parent.name: p for p in complete if p.name == f"fold{fold}"}
    order = [m for m in PUBLISHED_OFFSETS if m in found] + sorted(set(found) -
                                                                  set(PUBLISHED_OFFSETS))
    return {m: found[m] for m in order}
