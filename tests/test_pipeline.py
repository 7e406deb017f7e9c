"""gpcore.study.pipeline.train_models: finished runs are reused only while their configuration is the
current one; a run of an edited profile is set aside (never deleted) and retrained."""
import json

import pytest
import yaml

from gpcore.rundir import RunDir
from gpcore.study.pipeline import train_models
from fake_data import fake_store


def test_runs_reused_while_current_and_retrained_after_a_config_change(tmp_path):
    store, split = fake_store(tmp_path, 8)
    runs_dir = tmp_path / "runs"
    kw = dict(profile="smoke", models=["gp_unet"], folds=[0], progress=False)
    run = train_models(store, split, runs_dir, overrides=["train.epochs=1"], **kw)[("gp_unet", 0)]
    stamp = run.summary_file.stat().st_mtime_ns
    assert train_models(store, split, runs_dir, overrides=["train.epochs=1"], **kw)[
        ("gp_unet", 0)] == run
    assert run.summary_file.stat().st_mtime_ns == stamp  # same configuration: reused

    # the "profile was edited" case: another width for the same model and fold
    train_models(store, split, runs_dir, overrides=["train.epochs=1", "model.wf=1"], **kw)
    cfg = yaml.safe_load(run.config_file.read_text())["config"]
    assert cfg["model"]["wf"] == 1 and json.loads(run.summary_file.read_text())
    stale = sorted(run.path.parent.glob("fold0.stale-*"))
    assert len(stale) == 1 and (stale[0] / "best.safetensors").is_file()  # kept, not deleted
    old = yaml.safe_load((stale[0] / "config.yaml").read_text())["config"]
    assert old["model"].get("wf") != 1
    assert RunDir.of(runs_dir, "gp_unet", 0) == run


def test_parallel_training_matches_the_plan_and_names_a_failed_run(tmp_path):
    store, split = fake_store(tmp_path, 8)
    runs_dir = tmp_path / "runs"
    runs = train_models(store, split, runs_dir, "smoke", ["gp_unet", "gp_recon_resnet"], [0],
                        overrides=["train.epochs=1"], progress=False, parallel=2)
    for (model, fold), run in runs.items():
        assert run == RunDir.of(runs_dir, model, fold)
        summary = json.loads(run.summary_file.read_text())
        assert summary["epochs"] == 1
        assert yaml.safe_load(run.config_file.read_text())["config"]["model"]["name"] \
            == model
    with pytest.raises(RuntimeError, match="training no_such_model fold 0"):
        train_models(store, split, tmp_path / "bad", "smoke", ["gp_unet", "no_such_model"],
                     [0], overrides=["train.epochs=1"], progress=False, parallel=2)


def test_runs_of_a_rebuilt_store_or_another_split_are_set_aside(tmp_path):
    from gpcore.study.pipeline import set_aside_if_stale
    from gpcore.training.config import resolve_config

    store, split = fake_store(tmp_path, 8)
    runs_dir = tmp_path / "runs"
    run = train_models(store, split, runs_dir, "smoke", ["gp_unet"], [0],
                       overrides=["train.epochs=1"], progress=False)[("gp_unet", 0)]
    cfg = resolve_config("smoke", "gp_unet", ["train.epochs=1"])
    assert set_aside_if_stale(run, cfg, store, split) is None  # current: kept in place
    # a profile section for this study (recorded as its label) changes nothing it trained with
    assert set_aside_if_stale(run, {**cfg, "study": "phantom"}, store, split) is None
    other = tmp_path / "other_split.csv"
    other.write_text(split.read_text().replace("val", "train", 1))
    stale = set_aside_if_stale(run, cfg, store, other)
    assert stale is not None and not run.path.exists() and (stale / "summary.json").is_file()
    stale.rename(run.path)
    meta = json.loads((store / "store.json").read_text())
    (store / "store.json").write_text(json.dumps({**meta, "created": "rebuilt"}))
    assert set_aside_if_stale(run, cfg, store, split) is not None
