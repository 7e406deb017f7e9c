import os
import time
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


@pytest.fixture
def one_thread():
    """Tiny models: one thread is faster, and immune to the multi-second stalls of OpenMP
    barriers when the machine's cores are busy with other jobs (``pytestmark`` of a module)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory):
    """The whole smoke study (``./run_all.sh --profile smoke``) in a temporary output root, run
    once for every module that reads it: ``(root, seconds)``."""
    from gpcore.study.runner import run_study

    root = tmp_path_factory.mktemp("study")
    started = time.time()
    assert run_study("phantom", "smoke", output_root=root) == 0
    return root, time.time() - started
