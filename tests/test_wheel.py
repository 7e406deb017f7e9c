"""A wheel built from the repository, installed into a fresh virtual environment, carries its
configuration and runs ``gpcore train`` and ``gpcore segment`` outside the checkout.

The fresh environment gets gpcore from the wheel only (``pip install --no-deps``); its
dependencies are the ones this environment installed from requirements.lock, made visible
through a ``.pth`` line (no network, no second torch download). Its working directory is a
temporary folder, so nothing is read from the checkout.
"""
import importlib.metadata
import json
import os
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from fake_data import fake_store

REPO = Path(__file__).resolve().parents[1]


def _run(args, cwd, env=None):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "-w", str(root / "dist"), str(REPO)], cwd=root)
    wheel = next((root / "dist").glob("gpcore-*.whl"))
    env_dir = root / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # no PYTHONPATH: a checkout on the path would count as gpcore "already installed"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
          "--no-deps", "--no-index", str(wheel)], cwd=root, env=env)
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=root, env=env).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
            *site.getsitepackages()}
    (Path(purelib) / "_gpcore_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"
    env["OMP_NUM_THREADS"] = "1"
    return {"wheel": wheel, "bin": env_dir / "bin", "env": env, "root": root}


def test_the_wheel_carries_the_configuration_and_declares_its_dependencies(wheel_env):
    names = zipfile.ZipFile(wheel_env["wheel"]).namelist()
    for needed in ("gpcore/configs/train.yaml", "gpcore/configs/profiles/quick.yaml",
                   "gpcore/configs/profiles/smoke.yaml", "gpcore/configs/profiles/paper.yaml",
                   "gpcore/configs/models/gp_unet.yaml", "gpcore/rundir.py"):
        assert needed in names
    requires = " ".join(importlib.metadata.requires("gpcore") or [])
    for dist in ("tabulate", "captum", "safetensors", "nibabel", "scikit-image"):
        assert dist in requires  # what the CLI commands import


def test_installed_gpcore_trains_and_segments_outside_the_checkout(wheel_env, tmp_path):
    env, gpcore = wheel_env["env"], str(wheel_env["bin"] / "gpcore")
    where = _run([str(wheel_env["bin"] / "python"), "-c",
                  "import gpcore, gpcore.configs as c; print(gpcore.__file__); print(c.CONFIGS)"],
                 cwd=tmp_path, env=env).stdout.split()
    assert all(not p.startswith(str(REPO)) for p in where), where  # the wheel's copy
    store, split = fake_store(tmp_path / "data", 6, size=16)
    _run([gpcore, "train", "--store", str(store), "--split", str(split), "--model", "gp_unet",
          "--profile", "smoke", "--out", "run", "--no-progress", "train.epochs=1",
          "train.num_workers=0"], cwd=tmp_path, env=env)
    assert (tmp_path / "run" / "summary.json").is_file()
    bad = subprocess.run([gpcore, "train", "--store", str(store), "--split", str(split),
                          "--profile", "smoke", "--out", "run2", "train.epoch=1"], cwd=tmp_path,
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown key 'epoch'; did you mean 'epochs'?" in bad.stderr
    from gpcore.data.phantom import generate_phantom

    phantom = generate_phantom(tmp_path / "phantom", 1, seed=0, workers=1, progress=False)
    _run([gpcore, "segment", "--checkpoint", "run/best.safetensors", "--input", str(phantom),
          "--out", "seg", "--offset", "0.3"], cwd=tmp_path, env=env)
    summaries = list((tmp_path / "seg").glob("*/*_summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    assert summary["model"] == "gp_unet" and summary["predicted_class"] in summary["classes"]
