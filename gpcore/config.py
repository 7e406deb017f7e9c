"""Where the project's YAML configuration lives, and profile loading (kept free of heavy
imports: data preparation and training both read profiles)."""
from __future__ import annotations

from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load_profile(name_or_path: str) -> dict:
    """A profile YAML (``configs/profiles/<name>.yaml`` or a path)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIGS / "profiles" / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such profile; choose one of "
                                f"{sorted(p.stem for p in (CONFIGS / 'profiles').glob('*.yaml'))}")
    return yaml.safe_load(path.read_text())
