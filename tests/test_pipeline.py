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
    kw = dict(profile="smoke", models=["gp_unet"], folds=[0], progress=False, follow_up=False)
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
                        overrides=["train.epochs=1"], progress=False, parallel=2,
                        follow_up=False)
    for (model, fold), run in runs.items():
        assert run == RunDir.of(runs_dir, model, fold)
        summary = json.loads(run.summary_file.read_text())
        assert summary["epochs"] == 1
        assert yaml.safe_load(run.config_file.read_text())["config"]["model"]["name"] \
            == model
    with pytest.raises(RuntimeError, match="training no_such_model fold 0"):
        train_models(store, split, tmp_path / "bad", "smoke", ["gp_unet", "no_such_model"],
                     [0], overrides=["train.epochs=1"], progress=False, parallel=2,
                     follow_up=False)


def test_runs_of_a_rebuilt_store_or_another_split_are_set_aside(tmp_path):
    from gpcore.study.pipeline import set_aside_if_stale
    from gpcore.training.config import resolve_config

    store, split = fake_store(tmp_path, 8)
    runs_dir = tmp_path / "runs"
    run = train_models(store, split, runs_dir, "smoke", ["gp_unet"], [0],
                       overrides=["train.epochs=1"], progress=False, follow_up=False)[
        ("gp_unet", 0)]
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


def _outputs(run: RunDir) -> dict:
    """What the later stages read of a run: its tables and choices, as text."""
    files = [run.offset_choice_file(), *sorted(run.evaluation().glob("*.csv")),
             *sorted(run.explanations.glob("*.csv"))]
    record = json.loads((run.explanations / "explain.json").read_text())
    return {**{f.name: f.read_text() for f in files},
            "explain": json.dumps({k: record[k] for k in ("settings", "metrics")})}


def test_follow_up_evaluates_each_run_as_the_later_stages_would(tmp_path):
    """Each run is evaluated and explained in the training pool as soon as it is trained; the
    notebooks' own calls (evaluate_runs, compare) then reuse it, and computing the same in the
    notebook's process instead gives the same tables."""
    import shutil

    from gpcore.evaluation.compare import compare
    from gpcore.explanations.run import ExplainConfig
    from gpcore.study.pipeline import evaluate_runs, find_runs, needs_follow_up

    store, split = fake_store(tmp_path, 8)
    runs_dir = tmp_path / "runs"
    models = ["gp_unet", "gp_recon_resnet"]
    runs = train_models(store, split, runs_dir, "smoke", models, [0],
                        overrides=["train.epochs=1"], progress=False, parallel=2)
    assert not any(needs_follow_up(run, True) for run in runs.values())
    stamps = {key: (run.explanations / "explain.json").stat().st_mtime_ns
              for key, run in runs.items()}
    evaluate_runs(runs, progress=False)
    compare(list(runs.values()), tmp_path / "cmp", ExplainConfig.from_profile("smoke"),
            progress=False)
    assert stamps == {key: (run.explanations / "explain.json").stat().st_mtime_ns
                      for key, run in runs.items()}  # reused, not recomputed

    # the same runs evaluated by the stages themselves, in this process
    inline_dir = tmp_path / "inline"
    for model in models:
        shutil.copytree(runs[(model, 0)].path, inline_dir / model / "fold0")
        for folder in ("evaluation", "explanations"):
            shutil.rmtree(inline_dir / model / "fold0" / folder)
    inline = find_runs(inline_dir, models, [0])
    assert all(needs_follow_up(run, True) for run in inline.values())
    evaluate_runs(inline, progress=False)
    compare(list(inline.values()), tmp_path / "cmp_inline", ExplainConfig.from_profile("smoke"),
            progress=False)
    for key in runs:
        assert _outputs(inline[key]) == _outputs(runs[key])


def test_follow_up_of_runs_trained_earlier_and_without_a_pool(tmp_path):
    """A study interrupted after training: the next call evaluates the finished runs (first
    fold explained, later folds evaluated only); one at a time, it runs in this process."""
    store, split = fake_store(tmp_path, 8)
    runs_dir = tmp_path / "runs"
    kw = dict(profile="smoke", models=["gp_unet"], folds=[0, 1],
              overrides=["train.epochs=1"], progress=False, parallel=1)
    runs = train_models(store, split, runs_dir, follow_up=False, **kw)
    assert not any(run.is_evaluated() for run in runs.values())
    runs = train_models(store, split, runs_dir, **kw)
    first, second = runs[("gp_unet", 0)], runs[("gp_unet", 1)]
    assert first.is_evaluated() and (first.explanations / "explain.json").is_file()
    assert second.is_evaluated() and not (second.explanations / "explain.json").exists()


def test_a_failed_follow_up_is_reported_not_raised(tmp_path):
    """Training stays done when its evaluation fails; the error comes back as text (the later
    stage that needs the evaluation runs it again and stops there with the message)."""
    import torch

    from gpcore.study.pipeline import _follow_up_job

    threads = torch.get_num_threads()
    seconds, error = _follow_up_job(RunDir(tmp_path / "no_run"), "smoke", None, True,
                                    workers=1, threads=1)
    assert seconds >= 0 and "FileNotFoundError" in error and "no_run" in error
    assert torch.get_num_threads() == threads  # the job's thread count is undone
