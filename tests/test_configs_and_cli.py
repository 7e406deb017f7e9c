import pytest
import torch

from gpcore.cli import main
from gpcore.models import create_model, list_models, read_config_file
from gpcore.models.profile import count_flops, count_parameters, model_summary
from conftest import ROOT
from helpers import small_model


@pytest.mark.parametrize("name", list_models())
def test_config_files_hold_the_paper_configuration(name):
    model_name, cfg = read_config_file(ROOT / "gpcore" / "configs" / "models" / f"{name}.yaml")
    assert model_name == name
    with torch.device("meta"):
        assert create_model(name, **cfg).config == create_model(name).config


def test_model_summary_counts_paper_models():
    table = model_summary(240).set_index("model")
    assert table.loc["gp_unet", "parameters"] == 1_740_675
    # a 3x3 conv at full resolution dominates GP-UNet's cost: 64*64*9*240*240*2 FLOPs
    assert table.loc["gp_unet", "gflops_per_slice"] > 64 * 64 * 9 * 240 * 240 * 2 / 1e9
    assert (table["gflops_per_slice"] > 0).all()


def test_flops_on_meta_device_equal_flops_on_cpu():
    model = small_model("gp_unet")
    with torch.device("meta"):
        meta = small_model("gp_unet")
    assert count_flops(model, (1, 4, 32, 32)) == count_flops(meta, (1, 4, 32, 32))
    assert count_parameters(model) == count_parameters(meta)


def test_cli_lists_models(capsys):
    assert main(["models", "--size", "64"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        assert name in out
    assert "1,740,675" in out and "GFLOPs per 4×64×64" in out


def test_model_prints():
    text = repr(create_model("gp_unet"))
    assert "GPUNet" in text and "pool=features" in text


def test_a_profile_changes_its_sections_for_one_study(tmp_path):
    """``studies: {figshare: ...}`` applies to that study only: data (resolution, folds) and
    training; runs record the study only where its sections changed something."""
    import pytest

    from gpcore.configs import load_profile
    from gpcore.errors import ConfigError
    from gpcore.study.pipeline import study_plan
    from gpcore.training.config import resolve_config

    mine = tmp_path / "mine.yaml"
    mine.write_text("name: mine\ndata: {slice_size: 64, folds: 5}\ntrain: {epochs: 30}\n"
                    "model_train: {gp_unet: {lr: 0.001}}\n"
                    "studies:\n  figshare:\n    data: {slice_size: 128, folds: 4}\n"
                    "    model_train: {gp_unet: {epochs: 20}}\n")
    assert load_profile(str(mine))["data"] == {"slice_size": 64, "folds": 5}
    assert load_profile(str(mine), "phantom")["data"] == {"slice_size": 64, "folds": 5}
    assert load_profile(str(mine), "figshare")["data"] == {"slice_size": 128, "folds": 4}
    assert study_plan(str(mine), "all", "figshare")["folds"] == [0, 1, 2, 3]
    assert study_plan(str(mine), "all", "phantom")["folds"] == [0, 1, 2, 3, 4]
    fig = resolve_config(str(mine), "gp_unet", study="figshare")
    assert fig["train"]["epochs"] == 20 and fig["train"]["lr"] == 0.001  # merged, not replaced
    assert fig["study"] == "figshare"
    phantom = resolve_config(str(mine), "gp_unet", study="phantom")
    assert phantom["train"]["epochs"] == 30 and "study" not in phantom
    assert phantom == resolve_config(str(mine), "gp_unet")  # other studies' runs stay valid
    mine.write_text("name: mine\nstudies:\n  figshare:\n    data: {slice_sise: 128}\n")
    with pytest.raises(ConfigError, match=r"studies: figshare: data: unknown key 'slice_sise'"):
        load_profile(str(mine))
    mine.write_text("name: mine\nstudies:\n  figshare:\n    name: other\n")
    with pytest.raises(ConfigError, match=r"studies: figshare: unknown key 'name'"):
        load_profile(str(mine))


def test_cli_train_applies_the_profile_section_of_its_study(tmp_path):
    """``gpcore train --study figshare`` trains with the profile's ``studies: figshare:``
    changes (here 1 epoch instead of 2) and records the study in the run's config."""
    import yaml
    from fake_data import fake_store

    store, split = fake_store(tmp_path, n_subjects=8, size=16)
    profile = tmp_path / "tiny.yaml"
    profile.write_text("name: tiny\ntrain: {epochs: 2, batch_size: 8, num_workers: 0}\n"
                       "models: {gp_unet: {wf: 2, depth: 2}}\n"
                       "studies:\n  figshare:\n    train: {epochs: 1}\n")
    runs = {}
    for study in (None, "figshare"):
        out = tmp_path / f"run-{study}"
        args = ["train", "--store", str(store), "--split", str(split), "--model", "gp_unet",
                "--profile", str(profile), "--out", str(out), "--no-progress"]
        assert main(args + (["--study", study] if study else [])) == 0
        runs[study] = (yaml.safe_load((out / "config.yaml").read_text())["config"],
                       (out / "metrics.csv").read_text().strip().splitlines())
    (plain, plain_metrics), (fig, fig_metrics) = runs[None], runs["figshare"]
    assert plain["train"]["epochs"] == 2 and len(plain_metrics) == 1 + 2
    assert fig["train"]["epochs"] == 1 and len(fig_metrics) == 1 + 1
    assert fig["study"] == "figshare" and "study" not in plain


def test_readme_code_map_names_every_module_and_sub_command():
    """The README's "How it is built" map is of this layout: every stage package, every
    top-level module and every ``gpcore`` sub-command appear in it."""
    from gpcore.cli import build_parser

    text = (ROOT / "README.md").read_text()
    block = text[text.index("## How it is built"):text.index("## Citation")]
    package = ROOT / "gpcore"
    for path in sorted(package.iterdir()):
        if path.name.startswith("_") or path.name == "__pycache__":
            continue
        if path.is_dir():
            assert f"gpcore/{path.name}/" in block, path.name
            for module in path.glob("*.py"):
                if not module.name.startswith("_"):
                    assert module.stem in block, f"{path.name}/{module.name}"
        elif path.suffix == ".py" and path.stem != "cli":
            assert f"gpcore/{path.name}" in block, path.name
    sub = next(a for a in build_parser()._actions if getattr(a, "choices", None))
    for command in sub.choices:
        assert f"gpcore {command}" in block or f"| {command}" in block, command
