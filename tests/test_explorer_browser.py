"""The threshold explorer in a real browser (issue 15): JupyterLab served on loopback, Debian's
``chromium`` driven by Playwright (the system executable; no browser download), the study's
``09_threshold_explorer.ipynb`` opened and run over evaluated runs, then the offset slider
moved and the model and the slice switched - the slice Dice line and the mask image must
change each time. Skips with the reason when no browser (or Playwright) is installed;
``.ci/run`` installs ``chromium``.

``GPCORE_SCREENSHOT=PATH`` also keeps the final screenshot there (the one in
``docs/figures/explorer_browser.png`` was made so).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str | None:
    return os.environ.get("GPCORE_BROWSER") or next(
        (p for p in map(shutil.which, BROWSERS) if p), None)


pytestmark = pytest.mark.skipif(
    _browser() is None, reason="no chromium on this machine (apt-get install chromium); the "
                               "explorer's widgets are tested headless in test_explorer.py")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on loopback over a folder with the parameterised notebook and two
    evaluated runs (the headless test's fixture); yields ``(url of the notebook, root)``."""
    import papermill as pm

    from test_explorer import MODELS, _write_run
    from fake_data import fake_subject
    from gpcore.data.store import build_store

    root = tmp_path_factory.mktemp("lab")
    subjects = [fake_subject(i, "HGG" if i % 2 else "LGG") for i in range(1, 5)]
    store = build_store(subjects, root / "store", source={"kind": "test"}, size=32,
                        channels=("t1", "t2", "t1ce", "flair"), workers=1, progress=False)
    for seed, (model, spec) in enumerate(MODELS.items()):
        _write_run(root / "runs", store, model, *spec, seed=seed)
    notebook = root / "nb" / "09_threshold_explorer.ipynb"
    notebook.parent.mkdir()
    pm.execute_notebook(str(ROOT / "notebooks" / notebook.name), str(notebook),
                        parameters={"study": "phantom", "profile": "smoke",
                                    "runs_dir": str(root / "runs"),
                                    "results_dir": str(root / "results"),
                                    "figures_dir": str(root / "figures")},
                        prepare_only=True, kernel_name="gpcore")
    port, token = _free_port(), "gpcore-browser-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / "jconfig"),
           "JUPYTER_RUNTIME_DIR": str(root / "jruntime"), "MPLBACKEND": "Agg"}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--LabApp.news_url=", "--ServerApp.open_browser=False",
         "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start on loopback within 60 s")
        yield f"{base}/lab/tree/nb/{notebook.name}?token={token}", root
    finally:
        server.terminate()
        server.wait(timeout=30)


def _scores(page) -> str:
    return page.locator(".widget-html:has-text('slice Dice')").inner_text()


def _image(page) -> str:
    return page.locator(".jp-OutputArea-output img").last.get_attribute("src")


def _changed(page, before: tuple[str, str], timeout: float = 30.0) -> tuple[str, str]:
    """Wait until the scores line and the image differ from ``before``; return the new pair."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = (_scores(page), _image(page))
        if now[0] != before[0] and now[1] != before[1]:
            return now
        time.sleep(0.25)
    raise AssertionError(f"the view did not change: still {before[0]!r}")


def _set_readout(page, label: str, value: str) -> None:
    """Type ``value`` into the editable readout of the slider labelled ``label`` (what a user
    does to set it exactly), then Enter: the widget's value changes as on a drag."""
    readout = page.locator(f".widget-slider:has(label:text-is('{label}')) .widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(value)
    page.keyboard.press("Enter")


def _run_all(page, attempts: int = 4) -> None:
    """Run > Run All Cells, again if no cell started (a kernel reported idle can still be
    connecting: the first request is then dropped)."""
    started = page.locator(".jp-InputPrompt:text-matches('\\[(\\*|\\d+)\\]')")
    for _ in range(attempts):
        time.sleep(2)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            started.first.wait_for(timeout=15_000)
            return
        except playwright.TimeoutError:
            continue
    raise AssertionError("Run All Cells did not start the notebook's cells")


def test_explorer_in_a_browser(lab):
    url, root = lab
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_browser(),
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(url)
            page.locator(".jp-Notebook").wait_for(timeout=90_000)
            # the kernel is up when the toolbar says so; then Run > Run All Cells
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(
                timeout=90_000)
            _run_all(page)
            page.locator(".widget-html:has-text('slice Dice')").wait_for(timeout=120_000)
            page.locator(".jp-OutputArea-output img").last.wait_for(timeout=60_000)
            view = (_scores(page), _image(page))
            assert "gp_recon_resnet" not in view[0] and "gp_unet" in view[0]

            _set_readout(page, "offset", "0.90")  # a larger offset: a lower threshold
            view = _changed(page, view)
            assert "offset 0.90" in view[0]

            page.locator(".widget-dropdown:has(label:text-is('model')) select").select_option(
                "gp_recon_resnet")
            view = _changed(page, view)
            assert "gp_recon_resnet" in view[0]

            # a slice with tumour of another patient's range: the first slice holds none
            _set_readout(page, "slice", "4")
            view = _changed(page, view)
            shot = root / "explorer_browser.png"
            page.locator(".jp-Cell:has(.widget-html)").last.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("GPCORE_SCREENSHOT"):
                shutil.copyfile(shot, os.environ["GPCORE_SCREENSHOT"])
        except Exception:
            page.screenshot(path=str(root / "failure.png"))  # what the browser showed
            print(f"browser screenshot at the failure: {root / 'failure.png'}")
            raise
        finally:
            browser.close()
    # the notebook's own outputs (what a headless run leaves) were written by the browser run
    assert (root / "figures" / "threshold_explorer.png").is_file()
