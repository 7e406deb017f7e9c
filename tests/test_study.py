"""The papermill study runner on the models and data stages of the smoke study that
test_smoke_study.py checks as a whole (needs the "gpcore" kernel that run_tests.sh registers)."""
import json

import nbformat
import pandas as pd
import pytest

from gpcore.study.runner import STAGES, Stage, run_study


@pytest.fixture
def smoke_run(smoke_study):
    """The smoke study's output root (its models and data stages are what these tests read)."""
    return smoke_study[0]


def test_models_stage_writes_sane_tables_and_figures(smoke_run):
    results, figures = smoke_run / "results/phantom/smoke", smoke_run / "figures/phantom/smoke"
    models = pd.read_csv(results / "models.csv").set_index("model")
    assert models.loc["gp_shuffle_unet", "parameters"] == 26_371_587
    assert (models["gflops_per_slice"] > 1).all()
    assert (results / "models.md").read_text().startswith("| model")
    for ext in ("png", "pdf"):
        assert (figures / f"model_sizes.{ext}").stat().st_size > 1000
    executed = nbformat.read(results / "notebooks/01_models.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


def test_reference_equivalence_table_when_shared_data_is_present(smoke_run, shared_dir):
    table = pd.read_csv(smoke_run / "results/phantom/smoke/reference_equivalence.csv")
    assert len(table) == 5 and (table[["logits_rel_err", "heatmap_rel_err"]] <= 1e-4).all().all()


def test_unchanged_stage_is_skipped(smoke_run, capsys):
    assert run_study(profile="smoke", output_root=smoke_run, stages=["models", "data"]) == 0
    assert "unchanged since its last run, skipped" in capsys.readouterr().out


def test_failing_stage_stops_with_its_executed_copy(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "gpcore", "display_name": "gpcore", "language": "python"}
    params = nbformat.v4.new_code_cell("results_dir = ''")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("raise RuntimeError('stage broke')")]
    nbformat.write(nb, tmp_path / "broken.ipynb")
    code = run_study(profile="smoke", output_root=tmp_path / "out", notebooks_dir=tmp_path,
                     stage_list=(Stage("broken", "broken.ipynb"),))
    assert code == 1
    executed = tmp_path / "out/results/phantom/smoke/notebooks/broken.ipynb"
    assert "stage broke" in json.dumps(nbformat.read(executed, as_version=4).cells[-1].outputs)
    assert not (executed.parent / "broken.done").exists()


def test_real_studies_need_a_data_folder():
    with pytest.raises(SystemExit, match="needs --data"):
        run_study(study="brats2020")
    assert [s.name for s in STAGES][0] == "models"


def test_data_stage_builds_store_split_and_figures(smoke_run):
    results, figures = smoke_run / "results/phantom/smoke", smoke_run / "figures/phantom/smoke"
    counts = pd.read_csv(results / "data_counts.csv")
    per_class = counts.set_index("class")["slices"]
    assert per_class["Healthy"] > 0 and per_class["LGG"] > 0 and per_class["HGG"] > 0
    assert counts.set_index("class").loc["total", "patients"] == 8
    split = pd.read_csv(smoke_run / "data/phantom/smoke/split.csv")
    assert sorted(split.fold.unique()) == [0, 1, 2] and set(split.part) == {"train", "val", "test"}
    assert (pd.read_csv(results / "split_summary.csv").patients > 0).all()
    for name in ("data_examples", "phantom_subjects"):
        assert (figures / f"{name}.png").stat().st_size > 10_000
