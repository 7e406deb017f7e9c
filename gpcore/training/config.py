"""Training configuration: YAML defaults (``configs/train.yaml`` + the profile's ``train:``
section), then command-line overrides ``key=value`` (dotted keys, YAML values), resolved once
and saved as ``config.yaml`` in the run folder."""
from __future__ import annotations

import copy

import yaml

from ..config import CONFIGS, load_profile



def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_overrides(pairs: list[str]) -> dict:
    """``["train.epochs=3", "model.wf=4"]`` -> nested dict; values parsed as YAML."""
    out: dict = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"override {pair!r} is not KEY=VALUE (e.g. train.epochs=3)")
        key, value = pair.split("=", 1)
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


def resolve_config(profile: str = "quick", model: str = "gp_unet",
                   overrides: list[str] | dict | None = None) -> dict:
    """defaults <- profile's ``train`` section <- profile's per-model options <- overrides."""
    defaults = yaml.safe_load((CONFIGS / "train.yaml").read_text())
    prof = load_profile(profile)
    cfg = _merge(defaults, {"train": prof.get("train", {}), "profile": prof.get("name", profile)})
    cfg["model"] = {"name": model, **(prof.get("models", {}) or {}).get(model, {})}
    extra = parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {})
    cfg = _merge(cfg, extra)
    cfg["model"]["name"] = model  # the model is chosen by argument, not by override
    return cfg
