"""Training configuration: YAML defaults (``gpcore/configs/train.yaml``, with per-model defaults under
``model_train:``) + the profile's ``train:`` and ``model_train:`` sections, then command-line
overrides ``key=value`` (dotted keys, YAML values), resolved once and saved as ``config.yaml``
in the run folder."""
from __future__ import annotations

import yaml

from ..configs import CONFIGS, load_profile, profile_path
from ..configs import merge as _merge


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


def train_defaults() -> dict:
    """``gpcore/configs/train.yaml``'s ``train`` section: the paper's training settings."""
    return yaml.safe_load((CONFIGS / "train.yaml").read_text())["train"]


def resolve_config(profile: str = "quick", model: str = "gp_unet",
                   overrides: list[str] | dict | None = None, study: str | None = None) -> dict:
    """The training configuration of ``model`` under ``profile`` (for ``study``: with the
    profile's ``studies.<study>`` sections, recorded as ``"study"`` when there are any).

    ``train``: ``gpcore/configs/train.yaml``'s ``train`` <- its ``model_train.<model>`` (per-model
    defaults, e.g. MProtoNet's optimiser and objective) <- the profile's ``train`` <- the
    profile's ``model_train.<model>`` <- overrides. ``model``: the profile's
    ``models.<model>`` constructor options <- overrides.
    """
    defaults = yaml.safe_load((CONFIGS / "train.yaml").read_text())
    prof = load_profile(profile, study)
    model_train = defaults.pop("model_train", None) or {}
    per_model = model_train.get(model, {})
    prof_per_model = (prof.get("model_train") or {}).get(model, {})
    cfg = _merge(defaults, {"train": per_model})
    cfg = _merge(cfg, {"train": prof.get("train", {}), "profile": prof.get("name", profile)})
    if study and (prof.get("studies") or {}).get(study):  # another study's runs stay valid
        cfg["study"] = study
    cfg = _merge(cfg, {"train": prof_per_model})
    cfg["model"] = {"name": model, **(prof.get("models", {}) or {}).get(model, {})}
    extra = parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {})
    cfg = _merge(cfg, extra)
    cfg["model"]["name"] = model  # the model is chosen by argument, not by override
    _check(cfg, defaults["train"], model_train, profile, model, extra)
    return cfg


def _check(cfg: dict, train: dict, model_train: dict, profile: str, model: str,
           overrides: dict) -> None:
    """Unknown ``train`` keys and model options raise, naming where they came from
    (``train`` / ``model_train``: ``gpcore/configs/train.yaml``'s sections, the known keys)."""
    from ..configs import check_keys
    from ..models.registry import model_options
    from .settings import check_train

    where = f"{profile_path(profile)}" + (" (or the KEY=VALUE overrides)" if overrides else "")
    check_train(cfg["train"], f"{where}: train")  # unknown keys and wrong types raise
    try:
        accepted = model_options(model)
    except KeyError:  # an unknown model is reported where it is built, naming the run
        return
    check_keys(set(cfg["model"]) - {"name"}, accepted, f"{where}: models.{model}")
