"""Released models by name (``hf://owner/name[@revision]``): the real ``huggingface_hub`` download
code against a Hub-compatible file server on loopback, serving repositories laid out like the
authors' (``net.``-prefixed weights in ``pytorch_model.bin`` / ``model.safetensors``, a
``config.json`` and custom modelling code that must never be fetched)."""
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save as save_safetensors

from fake_data import fake_subject
from gpcore.data.records import BRATS_CLASSES, BRATS_CONTRASTS
from gpcore.data.store import build_store
from gpcore.inference.predict import predict_store
from gpcore.models import CheckpointError, create_model, from_hub, resolve_checkpoint
from gpcore.models.hub import PUBLISHED_REPOS, published_model
from gpcore.inference.segment import segment
from gpcore.inference import PUBLISHED_OFFSETS
from helpers import small_model

hf_constants = pytest.importorskip("huggingface_hub.constants")
pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
UNET = "soumickmj/GPUNet_BraTS2020_T1T2T1ceFlair_Axial"
RECON_T1CE = "soumickmj/GPReconResNet_BraTS2020T1ce_Axial"
SHUFFLE_T1CE = "soumickmj/GPShuffleUNet_BraTS2020T1ce_Axial"
OLD, NEW = "a" * 40, "b" * 40  # commits of UNET: v1.0 -> OLD, main -> NEW


def _weights_bin(model) -> bytes:
    """The authors' ``pytorch_model.bin``: a plain dict of ``net.``-prefixed tensors + loss."""
    import io

    state = {"net." + k: v for k, v in model.state_dict().items()}
    state["loss.weight"] = torch.tensor([0.63720577, 8.99051117, 0.75790886])
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _repo_files(arch: str, model, weights: str = "pytorch_model.bin",
               prefix: str = "net.") -> dict[str, bytes]:
    cfg = {"architectures": [arch], "model_type": arch, "out_act": "None",
           "auto_map": {"AutoConfig": f"{arch}Config.{arch}Config", "AutoModel": f"{arch}.{arch}"},
           "in_channels": model.in_channels, "n_classes": 3}
    blob = (_weights_bin(model) if weights == "pytorch_model.bin" else
            save_safetensors({prefix + k: v.contiguous() for k, v in model.state_dict().items()}))
    # custom code that a trust_remote_code loader would run: it must never be downloaded
    code = b"open('PWNED', 'w').write('remote code ran')\n"
    return {weights: blob, "config.json": json.dumps(cfg).encode(), f"{arch}.py": code,
            f"{arch}Config.py": code, "README.md": b"# model card\n"}


class FakeHub:
    """``HEAD``/``GET /{owner}/{name}/resolve/{revision}/{file}`` as the Hub answers them: ETag,
    X-Repo-Commit and Content-Length on success; X-Error-Code RepoNotFound (401),
    RevisionNotFound / EntryNotFound (404) otherwise. ``requests`` logs ``(method, path)``
    (huggingface_hub also asks ``/api/...`` for best-effort telemetry: answered 401, not counted
    by :meth:`resolves`)."""

    def __init__(self):
        # repo -> {"refs": {ref: commit}, "commits": {commit: {file: bytes}}}
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body):
                hub.requests.append((self.command, self.path))
                status, headers, data = hub.lookup(urlsplit(self.path).path)
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, repo: str, commits: dict[str, dict[str, bytes]], refs: dict[str, str]):
        self.repos[repo] = {"commits": commits, "refs": refs}

    def lookup(self, path: str):
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if not m or m[1] not in self.repos:
            return 401, {"X-Error-Code": "RepoNotFound",
                         "X-Error-Message": "Repository not found"}, b"Repository not found"
        repo, revision, file = self.repos[m[1]], unquote(m[2]), unquote(m[3])
        commit = repo["refs"].get(revision, revision if revision in repo["commits"] else None)
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound"}, b"Invalid rev id"
        files = repo["commits"][commit]
        if file not in files:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b"not found"
        data = files[file]
        return 200, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": commit,
                     "Content-Type": "application/octet-stream"}, data

    def resolves(self) -> list[str]:
        """The paths of the file requests made so far."""
        return [p for _, p in self.requests if "/resolve/" in p]

    def fetched(self) -> set[str]:
        return {p.rsplit("/", 1)[-1] for p in self.resolves()}


@pytest.fixture(scope="module")
def served():
    """The fake Hub and the models behind its repositories."""
    torch.manual_seed(0)
    old, new = small_model("gp_unet", up_mode="sinc"), small_model("gp_unet", up_mode="sinc")
    recon = small_model("gp_recon_resnet", in_channels=1, up_mode="sinc")
    shuffle = small_model("gp_shuffle_unet", in_channels=1)
    hub = FakeHub()
    hub.add(UNET, {OLD: _repo_files("GPUNet", old), NEW: _repo_files("GPUNet", new)},
            {"main": NEW, "v1.0": OLD})
    hub.add(RECON_T1CE, {"c" * 40: _repo_files("GPReconResNet", recon, "model.safetensors")},
            {"main": "c" * 40})
    # weights held as PreTrainedModel.model (the wrapper of the authors' other Hub models)
    hub.add(SHUFFLE_T1CE, {"f" * 40: _repo_files("GPShuffleUNet", shuffle, "model.safetensors",
                                                 prefix="model.")}, {"main": "f" * 40})
    # a mislabelled repository: the name says GP-UNet, the weights are GP-ShuffleUNet
    hub.add("someone/GPUNet_BraTS2020_T1T2T1ceFlair_Axial",
            {"d" * 40: _repo_files("GPUNet", small_model("gp_shuffle_unet"))}, {"main": "d" * 40})
    hub.add("someone/empty", {"e" * 40: {"README.md": b"# nothing\n"}}, {"main": "e" * 40})
    yield hub, {"old": old.eval(), "new": new.eval(), "recon": recon.eval(),
                "shuffle": shuffle.eval()}
    hub.server.shutdown()


@pytest.fixture
def hub(served, tmp_path, monkeypatch):
    """The fake Hub as HF_ENDPOINT, with an empty cache under ``tmp_path`` (huggingface_hub
    reads its settings once, at import: its constants are set as well)."""
    fake, models = served
    env = {"HF_ENDPOINT": fake.url, "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        fake.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    fake.requests.clear()
    return fake, models, env


def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)


def _same(a, b, channels=4):
    x = torch.rand(2, channels, 32, 40)
    with torch.no_grad():
        for ta, tb in zip(a.eval().forward_with_heatmap(x), b.eval().forward_with_heatmap(x)):
            assert ta.shape == tb.shape and torch.equal(ta, tb)


@pytest.mark.parametrize("repo", PUBLISHED_REPOS)
def test_the_six_published_repositories_name_their_model_and_contrasts(repo):
    name, contrasts = published_model(repo)
    assert name == {"GPUNet": "gp_unet", "GPReconResNet": "gp_recon_resnet",
                    "GPShuffleUNet": "gp_shuffle_unet"}[repo.split("/")[1].split("_")[0]]
    assert contrasts == (("t1", "t2", "t1ce", "flair") if "T1T2T1ceFlair" in repo else ("t1ce",))


def test_download_load_forward_then_offline_from_cache(hub, monkeypatch):
    fake, models, _ = hub
    path, meta = resolve_checkpoint(f"hf://{UNET}")
    assert path.name == "pytorch_model.bin" and meta["model"] == "gp_unet"
    assert meta["extra"] == {"normalisation": "max", "channels": list(BRATS_CONTRASTS),
                             "input_size": 240, "classes": list(BRATS_CLASSES)}
    assert meta["hub"]["uri"] == f"hf://{UNET}@{NEW}" and meta["hub"]["commit"] == NEW
    model = from_hub(UNET).eval()
    logits, heatmap = model.forward_with_heatmap(torch.rand(2, 4, 32, 40))
    assert logits.shape == (2, 3) and heatmap.shape == (2, 3, 32, 40)
    _same(model, models["new"])
    # weights and config only: the repository's code is never fetched, let alone run
    assert fake.fetched() == {"model.safetensors", "pytorch_model.bin", "config.json"}
    assert not Path("PWNED").exists()

    # the safetensors repository, one contrast
    path, meta = resolve_checkpoint(f"hf://{RECON_T1CE}")
    assert path.name == "model.safetensors" and meta["extra"]["channels"] == ["t1ce"]
    _same(create_model(checkpoint=f"hf://{RECON_T1CE}"), models["recon"], channels=1)

    _same(from_hub(SHUFFLE_T1CE), models["shuffle"], channels=1)  # "model." prefix

    n = len(fake.resolves())
    _offline(monkeypatch)
    _same(from_hub(UNET), models["new"])
    _same(from_hub(f"hf://{RECON_T1CE}"), models["recon"], channels=1)
    assert len(fake.resolves()) == n  # the cache alone
    with pytest.raises(CheckpointError, match=r"^hf://soumickmj/GPUNet\S*@v1.0: not in the "
                                              r"Hugging Face cache"):
        from_hub(UNET, revision="v1.0")


def test_revisions_pin_the_weights(hub):
    _, models, _ = hub
    _same(from_hub(UNET, revision="v1.0"), models["old"])
    _same(from_hub(f"hf://{UNET}@{OLD}"), models["old"])
    _same(create_model(checkpoint=f"hf://{UNET}@main"), models["new"])
    assert resolve_checkpoint(f"hf://{UNET}@v1.0")[1]["hub"]["uri"] == f"hf://{UNET}@{OLD}"
    path, meta = resolve_checkpoint(f"hf://{UNET}@v1.0/pytorch_model.bin")  # an explicit file
    assert meta["hub"]["uri"] == f"hf://{UNET}@{OLD}/pytorch_model.bin" and OLD in str(path)
    with pytest.raises(CheckpointError) as err:
        from_hub(UNET, revision="v9")
    assert str(err.value) == (f"hf://{UNET}@v9: repository '{UNET}' has no revision 'v9'; give "
                              f"one of its branches, tags or commits")


@pytest.mark.parametrize("uri, message", [
    ("hf://soumickmj/GPUNet_BraTS2020_Nope",
     "no model repository 'soumickmj/GPUNet_BraTS2020_Nope'"),
    ("hf://GPUNet", "not a Hub model URI"),
    ("hf://someone/empty", "has none of model.safetensors, pytorch_model.bin"),
    ("hf://someone/empty@main/weights.pt", "has no file 'weights.pt'"),
    ("hf://someone/GPUNet_BraTS2020_T1T2T1ceFlair_Axial",
     "the name says gp_unet but pytorch_model.bin holds gp_shuffle_unet weights"),
])
def test_bad_repositories_give_one_line_errors_naming_them(hub, uri, message):
    with pytest.raises(CheckpointError) as err:
        from_hub(uri)
    text = str(err.value)
    assert text.startswith(uri + ":") and message in text and "\n" not in text


def test_cli_names_a_missing_repository_in_one_line(hub, tmp_path, capsys):
    from gpcore.cli import main

    with pytest.raises(SystemExit) as err:
        main(["segment", "--checkpoint", "hf://soumickmj/GPUNet_Typo", "--input",
              str(tmp_path), "--out", str(tmp_path / "out")])
    assert err.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "gpcore segment: error: hf://soumickmj/GPUNet_Typo: no model repository "
                              "'soumickmj/GPUNet_Typo' on the Hub (or it is private); check the "
                              f"name, e.g. {UNET}")


def test_predict_cli_from_the_hub_works_offline_from_the_cache(hub, tmp_path):
    fake, models, env = hub
    store = build_store([fake_subject(i, "HGG" if i % 2 else "LGG") for i in (1, 2)],
                        tmp_path / "store", source={"kind": "fake"}, channels=BRATS_CONTRASTS,
                        size=240, workers=1, progress=False)
    resolve_checkpoint(f"hf://{UNET}")  # cached once online
    n = len(fake.resolves())
    run = subprocess.run(
        [sys.executable, "-m", "gpcore", "predict", "--checkpoint", f"hf://{UNET}",
         "--store", str(store.path), "--out", str(tmp_path / "pred"), "--batch-size", "8"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, **env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(fake.resolves()) == n
    info = json.loads((tmp_path / "pred" / "predict.json").read_text())
    assert info["checkpoint"] == f"hf://{UNET}@{NEW}" and info["normalisation"] == "max"
    assert np.load(tmp_path / "pred" / "heatmaps.npy").shape == (len(store), 3, 240, 240)
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(store.images[:2], np.float32))
        expected = models["new"](x / x.amax(dim=(1, 2, 3), keepdim=True))
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "pred" / "logits.npy")[:2]),
                               expected, rtol=1e-4, atol=1e-5)

    with pytest.raises(ValueError, match="takes 1"):  # the T1CE model on a 4-contrast store
        predict_store(f"hf://{RECON_T1CE}", store, [0], tmp_path / "bad", progress=False)


def test_segment_uses_the_published_rule_for_hub_models(hub, tmp_path):
    rng = np.random.default_rng(0)
    volume = np.zeros((40, 36, 3, 4), np.float32)
    volume[4:36, 4:32] = rng.uniform(1, 100, size=(32, 28, 3, 4))
    src = tmp_path / "patient.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), src)
    segment(f"hf://{UNET}@v1.0", src, tmp_path / "out", progress=False)
    summary = json.loads((tmp_path / "out" / "patient" / "patient_summary.json").read_text())
    assert summary["checkpoint"] == f"hf://{UNET}@{OLD}" and summary["model"] == "gp_unet"
    assert summary["mask_rule_source"] == "published"
    assert summary["offset"] == PUBLISHED_OFFSETS["gp_unet"]
    assert summary["input_size"] == 240 and summary["normalisation"] == "max"
    assert summary["classes"] == list(BRATS_CLASSES)
    with pytest.raises(ValueError, match="pass --contrasts t1ce"):  # subject folders, T1CE model
        subject = tmp_path / "subjects" / "P1"
        subject.mkdir(parents=True)
        for k, c in enumerate(BRATS_CONTRASTS):
            nib.save(nib.Nifti1Image(volume[..., k], np.eye(4)), subject / f"P1_{c}.nii.gz")
        segment(f"hf://{RECON_T1CE}", tmp_path / "subjects", tmp_path / "out2", progress=False)


def test_evaluate_scores_a_hub_model_as_a_run_for_the_explorer_and_segment(hub, tmp_path):
    """``gpcore evaluate --checkpoint hf://...``: a released model gets a run folder that the
    run-level tools read like a trained run's (rule chosen on the fold's validation patients,
    the published offset beside it)."""
    from gpcore.cli import main
    from gpcore.study.explorer import build_explorer, find_evaluated_runs
    from gpcore.evaluation.external import adopt_checkpoint

    fake, models, env = hub
    ids = [fake_subject(i, "HGG" if i % 2 else "LGG") for i in range(1, 5)]
    store = build_store(ids, tmp_path / "store", source={"kind": "fake"},
                        channels=BRATS_CONTRASTS, size=240, workers=1, progress=False)
    split = tmp_path / "split.csv"
    parts = ("train", "val", "val", "test")
    split.write_text("fold,patient_id,stratum,part\n" + "".join(
        f"0,{s.subject_id},{s.grade},{p}\n" for s, p in zip(ids, parts)))
    out = tmp_path / "runs" / "GPUNet" / "fold0"
    args = ["evaluate", "--checkpoint", f"hf://{UNET}", "--store", str(store.path),
            "--split", str(split), "--out", str(out), "--resamples", "50", "--workers", "1"]
    assert main(args) == 0
    record = yaml.safe_load((out / "config.yaml").read_text())
    assert record["external"] and record["checkpoint"]["source"] == f"hf://{UNET}@{NEW}"
    assert record["config"]["model"]["name"] == "gp_unet" and record["classes"] == list(
        BRATS_CLASSES)
    choice = json.loads((out / "evaluation" / "offset_choice.json").read_text())
    assert choice["chosen_on"] == "validation patients"
    assert choice["published_offset"] == PUBLISHED_OFFSETS["gp_unet"]
    summary = pd.read_csv(out / "evaluation" / "segmentation_summary.csv")
    assert set(summary["setting"]) == {"validation-chosen", "published"}
    rows = pd.read_csv(out / "predictions" / "test" / "index.csv")["row"].to_numpy()
    with torch.no_grad():  # the Hub weights, max-normalised as published
        x = torch.from_numpy(np.asarray(store.images[rows], np.float32))
        expected = models["new"](x / x.amax(dim=(1, 2, 3), keepdim=True))
    torch.testing.assert_close(torch.from_numpy(np.load(out / "predictions/test/logits.npy")),
                               expected, rtol=1e-4, atol=1e-5)

    ui = build_explorer(find_evaluated_runs(tmp_path / "runs"), dpi=30)  # the explorer reads it
    assert ui.state.models == ["GPUNet"]
    assert ui.widgets["offset"].value == pytest.approx(choice["offset"])
    assert np.isfinite(ui.state.cohort_median_dice())

    volume = np.zeros((40, 36, 3, 4), np.float32)  # segment takes the run's own choice
    volume[4:36, 4:32] = np.random.default_rng(0).uniform(1, 100, size=(32, 28, 3, 4))
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "patient.nii.gz")
    segment(out / "best.safetensors", tmp_path / "patient.nii.gz", tmp_path / "seg",
            progress=False)
    seg = json.loads((tmp_path / "seg" / "patient" / "patient_summary.json").read_text())
    assert seg["mask_rule_source"].startswith("validation-chosen")
    assert seg["offset"] == choice["offset"]
    assert seg["input_size"] == 240 and seg["classes"] == list(BRATS_CLASSES)

    assert main(args) == 0  # the same checkpoint, store and fold: reused
    with pytest.raises(FileExistsError, match="holds another run"):  # another revision
        adopt_checkpoint(f"hf://{UNET}@v1.0", store, split, 0, out)
    bad = tmp_path / "runs" / "recon" / "fold0"  # a T1CE model on a 4-contrast store
    with pytest.raises(ValueError, match="takes 1"):
        adopt_checkpoint(f"hf://{RECON_T1CE}", store, split, 0, bad)
    assert not bad.exists()  # nothing written before the checks
