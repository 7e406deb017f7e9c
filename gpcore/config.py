"""Where the project's YAML configuration lives, and profile loading (kept free of heavy
imports: data preparation and training both read profiles)."""
from __future__ import annotations

from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


#: the sections of a profile and the keys of its ``data`` and ``explain`` sections (``train``
#: keys are checked against ``configs/train.yaml``, model options against the constructors)
PROFILE_KEYS = {
    "name": None, "train": None, "models": None, "model_train": None,
    "data": {"phantom_subjects", "phantom_seed", "phantom_hgg_fraction", "slice_size", "folds",
             "val_fraction", "split_seed"},
    "explain": {"occlusion_window", "occlusion_stride", "captum_max_slices", "ids_max_slices",
                "batch_size", "n_resamples"},
}


def check_keys(found, known, where: str) -> None:
    """Raise :class:`gpcore.errors.ConfigError` naming ``where`` and the close matches when
    ``found`` holds a key not in ``known`` (a typo would otherwise be silently ignored)."""
    import difflib

    from .errors import ConfigError

    unknown = sorted(set(found) - set(known))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"
        raise ConfigError(f"{where}: unknown key {key!r}; {hint}")


def check_profile(profile: dict, path) -> dict:
    """The sections and data / explain keys of a profile read from ``path``."""
    from .errors import ConfigError

    if not isinstance(profile, dict):
        raise ConfigError(f"{path}: a profile is a YAML mapping of sections "
                          f"({', '.join(PROFILE_KEYS)})")
    check_keys(profile, PROFILE_KEYS, str(path))
    for section, keys in PROFILE_KEYS.items():
        if keys is not None and profile.get(section) is not None:
            check_keys(profile[section], keys, f"{path}: {section}")
    return profile


def profile_path(name_or_path: str) -> Path:
    """``configs/profiles/<name>.yaml`` for a profile name, else the path itself."""
    path = Path(name_or_path)
    return CONFIGS / "profiles" / f"{name_or_path}.yaml" if not path.suffix else path


def load_profile(name_or_path: str) -> dict:
    """A profile YAML (``configs/profiles/<name>.yaml`` or a path), its keys checked."""
    path = profile_path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such profile; choose one of "
                                f"{sorted(p.stem for p in (CONFIGS / 'profiles').glob('*.yaml'))}")
    try:
        profile = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        from .errors import ConfigError

        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return check_profile(profile, path)
