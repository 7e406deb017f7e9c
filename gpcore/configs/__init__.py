"""Where the project's YAML configuration lives (``gpcore/configs``: ``train.yaml``,
``profiles/*.yaml``, ``models/*.yaml``), and profile loading (kept free of heavy
imports: data preparation and training both read profiles).

A profile may change its sections for one study (``studies: {figshare: {data: ...}}``):
``load_profile(name, study)`` merges that study's sections over the others, so one profile
name (``quick``) means "minutes on a CPU" for the phantom and for Figshare alike.
"""
from __future__ import annotations

import copy
from importlib.resources import files
from pathlib import Path

import yaml

#: the YAML files shipped inside the package (a wheel carries them; read with importlib.resources)
CONFIGS = Path(str(files(__name__)))


#: the sections of a profile and the keys of its ``data``, ``explain`` and ``efficiency`` sections
#: (``train`` keys are checked by :mod:`gpcore.training.settings`, model options against the
#: constructors)
PROFILE_KEYS = {
    "name": None, "train": None, "models": None, "model_train": None, "studies": None,
    "data": {"phantom_subjects", "phantom_seed", "phantom_hgg_fraction", "slice_size", "folds",
             "val_fraction", "split_seed"},
    "explain": {"occlusion_window", "occlusion_stride", "captum_max_slices", "ids_max_slices",
                "batch_size", "n_resamples"},
    "efficiency": {"batch_sizes", "reps", "max_seconds"},  # the efficiency notebook's timings
}


def check_keys(found, known, where: str) -> None:
    """Raise :class:`gpcore.errors.ConfigError` naming ``where`` and the close matches when
    ``found`` holds a key not in ``known`` (a typo would otherwise be silently ignored)."""
    import difflib

    from ..errors import ConfigError

    unknown = sorted(set(found) - set(known))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"
        raise ConfigError(f"{where}: unknown key {key!r}; {hint}")


def check_profile(profile: dict, path) -> dict:
    """The sections and data / explain keys of a profile read from ``path``."""
    from ..errors import ConfigError

    if not isinstance(profile, dict):
        raise ConfigError(f"{path}: a profile is a YAML mapping of sections "
                          f"({', '.join(PROFILE_KEYS)})")
    check_keys(profile, PROFILE_KEYS, str(path))
    _check_sections(profile, str(path))
    studies = profile.get("studies") or {}
    if not isinstance(studies, dict):
        raise ConfigError(f"{path}: studies: a mapping of study name to sections")
    for study, sections in studies.items():
        where = f"{path}: studies: {study}"
        if not isinstance(sections, dict):
            raise ConfigError(f"{where}: a mapping of sections ({', '.join(STUDY_SECTIONS)})")
        check_keys(sections, STUDY_SECTIONS, where)
        _check_sections(sections, where)
    return profile


#: the sections a study may change (``studies: {<study>: {...}}``)
STUDY_SECTIONS = tuple(k for k in PROFILE_KEYS if k not in ("name", "studies"))


def _check_sections(sections: dict, where: str) -> None:
    for section, keys in PROFILE_KEYS.items():
        if keys is not None and sections.get(section) is not None:
            check_keys(sections[section], keys, f"{where}: {section}")


def merge(base: dict, override: dict) -> dict:
    """``override`` over a deep copy of ``base``, nested mappings merged key by key."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def profile_path(name_or_path: str) -> Path:
    """``gpcore/configs/profiles/<name>.yaml`` for a profile name, else the path itself."""
    path = Path(name_or_path)
    return CONFIGS / "profiles" / f"{name_or_path}.yaml" if not path.suffix else path


def load_profile(name_or_path: str, study: str | None = None) -> dict:
    """A profile YAML (``gpcore/configs/profiles/<name>.yaml`` or a path), its keys checked; with
    ``study``, that study's ``studies:`` sections merged over the others."""
    path = profile_path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such profile; choose one of "
                                f"{sorted(p.stem for p in (CONFIGS / 'profiles').glob('*.yaml'))}")
    try:
        profile = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        from ..errors import ConfigError

        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    profile = check_profile(profile, path)
    sections = (profile.get("studies") or {}).get(study) if study else None
    return merge(profile, sections) if sections else profile
