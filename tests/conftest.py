import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPCORE_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The team's ``shared/`` folder (specs, reference vectors, Figshare slices)."""
    if not (SHARED / "reference").is_dir():
        pytest.skip(f"needs the shared reference data at {SHARED} (absent in a user's clone; "
                    f"set GPCORE_SHARED to its location)")
    return SHARED


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
