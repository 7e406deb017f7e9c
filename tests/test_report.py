"""python -m gpcore.study.report: the README's results section is generated from the result tables."""
import json

import pandas as pd
import pytest

from gpcore.study.report import END, START, main, section


@pytest.fixture()
def results(tmp_path):
    folder = tmp_path / "results" / "phantom" / "quick"
    folder.mkdir(parents=True)
    pd.DataFrame([{"run": "synthetic phantom, fold 0", "model": "gp_unet", "macro-F1": "0.668",
                   "median Dice [95% CI]": "0.386 [0.060, 0.786]",
                   "Δ median Dice vs all-brain [95% CI]": "0.266 [0.010, 0.600]",
                   "healthy FP rate": "0.068", "extra column": "not shown"}]
                 ).to_csv(folder / "comparison.csv", index=False)
    pd.DataFrame([{"model": "gp_unet", "fold": 0, "epochs": 30, "best_epoch": 28,
                   "val_macro_f1": 0.42, "train_seconds": 236.4}]
                 ).to_csv(folder / "training.csv", index=False)
    (folder / "environment.json").write_text(json.dumps(
        {"machine": "test CPU, 2 cores", "torch": "2.13.0+cpu", "finished": "2026-11-27T09:15",
         "study_minutes": 21.5}))
    return folder


def test_section_holds_the_tables_values(results):
    text = section(results)
    assert text.startswith("### phantom · quick")
    assert "0.386 [0.060, 0.786]" in text and "0.266 [0.010, 0.600]" in text
    assert "test CPU, 2 cores" in text and "21.5 min" in text and "236 |" in text  # 3 significant digits
    assert "not shown" not in text


def test_readme_rewritten_between_markers_only(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# top\n{START}\nold numbers\n{END}\ntail\n")
    figure = tmp_path / "grid.png"
    figure.write_bytes(b"\x89PNG fake")
    assert main([str(results), "--readme", str(readme), "--figure", str(figure)]) == 0
    text = readme.read_text()
    assert text.startswith("# top\n") and text.endswith(f"{END}\ntail\n")
    assert "old numbers" not in text and "0.386 [0.060, 0.786]" in text
    assert (tmp_path / "docs/figures/overview.png").read_bytes() == b"\x89PNG fake"


def test_readme_without_markers_is_refused_and_kept(results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit):
        main([str(results), "--readme", str(readme)])
    assert "markers" in capsys.readouterr().err
    assert readme.read_text() == "# no markers\n"


def test_section_holds_the_cross_validated_tables(results):
    """With several folds the section adds cv_summary (readable) and cv_folds."""
    pd.DataFrame([{"run": "phantom, folds 0,1", "model": "gp_unet"}]).to_csv(
        results / "cv_summary.csv", index=False)
    pd.DataFrame([{"model": "gp_unet", "folds localised": "1/2",
                   "pooled median Dice [95% CI]": "0.412 [0.300, 0.500]"}]).to_csv(
        results / "cv_summary_readable.csv", index=False)
    pd.DataFrame([{"model": "gp_unet", "fold": f, "median_dice": d, "mask_rule": "evidence, 0.1"}
                  for f, d in ((0, 0.5), (1, 0.25))]).to_csv(results / "cv_folds.csv",
                                                                index=False)
    text = section(results)
    assert "**Cross-validated** (phantom, folds 0,1)" in text
    assert "0.412 [0.300, 0.500]" in text and "1/2" in text
    assert "evidence, 0.1" in text and "0.25" in text
    for name in ("cv_summary.csv", "cv_summary_readable.csv", "cv_folds.csv"):
        (results / name).unlink()


def test_readme_keeps_the_sections_of_studies_not_given(results, tmp_path):
    readme = tmp_path / "README.md"
    other = "### figshare · quick\n\nfigshare numbers 0.063\n"
    readme.write_text(f"# top\n{START}\nnote\n\n### phantom · quick\n\nold 0.111\n\n{other}"
                      f"{END}\ntail\n")
    assert main([str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old 0.111" not in text and "0.386 [0.060, 0.786]" in text  # replaced
    assert "figshare numbers 0.063" in text  # kept
    assert text.index("### phantom · quick") < text.index("### figshare · quick")  # in order
    assert text.count("### phantom · quick") == 1 and text.endswith(f"{END}\ntail\n")
