"""The BraTS-layout synthetic phantom: layout, format, labels, anatomy, determinism, resume."""
import argparse
import csv

import nibabel as nib
import numpy as np
import pytest

from gpcore.data.phantom import (NAME_MAPPING_COLUMNS, SUFFIXES, add_cli, assign_grades,
                                 generate_phantom, generate_subject, phantom_figure,
                                 subject_paths)
from gpcore.data.phantom_anatomy import BRATS_AFFINE, GRID

N = 3  # round(3 * 293/369) = 2 HGG, 1 LGG


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Seed 0, three subjects, two worker processes."""
    out = tmp_path_factory.mktemp("phantom_a")
    return out, generate_phantom(out, N, seed=0, workers=2, progress=False)


@pytest.fixture(scope="module")
def grades(cohort):
    with open(cohort[1] / "name_mapping.csv", newline="") as f:
        return [row["Grade"] for row in csv.DictReader(f)]


def load(training, index, suffix):
    return nib.load(subject_paths(training, index)[suffix])


def files_of(training):
    return sorted(p.relative_to(training) for p in training.rglob("*") if p.is_file())


def test_layout_and_name_mapping(cohort, grades):
    _, training = cohort
    assert training.name == "MICCAI_BraTS2020_TrainingData"
    expected = {f"BraTS20_Training_{i:03d}/BraTS20_Training_{i:03d}_{s}.nii.gz"
                for i in range(1, N + 1) for s in SUFFIXES} | {"name_mapping.csv"}
    assert {str(p) for p in files_of(training)} == expected  # no temporary files left over
    with open(training / "name_mapping.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == NAME_MAPPING_COLUMNS
    assert [r["BraTS_2020_subject_ID"] for r in rows] == [f"BraTS20_Training_{i:03d}"
                                                          for i in range(1, N + 1)]
    assert sorted(grades) == ["HGG", "HGG", "LGG"]


def test_grade_assignment():
    g = assign_grades(369, seed=3)
    assert g.count("HGG") == 293 and g == assign_grades(369, seed=3)
    assert g != assign_grades(369, seed=4)
    assert sorted(assign_grades(2, seed=0)) == ["HGG", "LGG"]
    assert sorted(assign_grades(10, seed=0, hgg_fraction=1.0)).count("LGG") == 1


def test_format_labels_and_slices(cohort):
    _, training = cohort
    for i in range(1, N + 1):
        for s in SUFFIXES:
            img = load(training, i, s)
            assert img.shape == GRID
            np.testing.assert_allclose(img.affine, BRATS_AFFINE)
            want = np.uint8 if s == "seg" else np.int16
            assert img.get_data_dtype() == want
        seg = np.asarray(load(training, i, "seg").dataobj)
        assert set(np.unique(seg)) <= {0, 1, 2, 4} and not (seg == 3).any()
        t1 = np.asarray(load(training, i, "t1").dataobj)
        tumour_slices = (seg > 0).any(axis=(0, 1))
        brain_slices = (t1 > 0).sum(axis=(0, 1)) > 1000
        assert tumour_slices.sum() >= 10
        assert (brain_slices & ~tumour_slices).sum() >= 20  # healthy slices for the Healthy class
        assert not (seg > 0)[t1 == 0].any()  # tumour only inside the brain


def test_grades_look_different(cohort, grades):
    _, training = cohort
    et = {"HGG": [], "LGG": []}
    for i, g in enumerate(grades, start=1):
        seg = np.asarray(load(training, i, "seg").dataobj)
        et[g].append((seg == 4).sum() / max((seg > 0).sum(), 1))
    assert et["HGG"][0] > 0.02  # the first HGG has ring enhancement
    assert np.mean(et["HGG"]) > np.mean(et["LGG"])


def test_tissue_ordering_background_and_file_consistency(cohort, grades):
    _, training = cohort
    sub = generate_subject(1, grades[0], seed=0, return_tissue=True)
    healthy = sub["seg"] == 0
    wm, gm, csf = ((sub[k] > 0.9) & healthy for k in ("wm", "gm", "csf"))
    mean = {c: {t: float(v[m].mean()) for t, m in (("wm", wm), ("gm", gm), ("csf", csf))}
            for c, v in sub["images"].items()}
    assert mean["t1"]["wm"] > mean["t1"]["gm"] > mean["t1"]["csf"]
    assert mean["t1ce"]["wm"] > mean["t1ce"]["gm"] > mean["t1ce"]["csf"]
    assert mean["t2"]["csf"] > mean["t2"]["gm"] > mean["t2"]["wm"]
    assert mean["flair"]["gm"] >= mean["flair"]["wm"] > mean["flair"]["csf"]
    for name, img in sub["images"].items():
        assert not img[~sub["brain"]].any()  # exactly 0 outside the brain
        assert (img[sub["brain"]] > 0).mean() > 0.999
        # the written file holds exactly what generate_subject makes
        np.testing.assert_array_equal(np.asarray(load(training, 1, name).dataobj), img)


def test_subjects_differ_and_seed_matters(cohort):
    _, training = cohort
    brain1 = np.asarray(load(training, 1, "t1").dataobj) > 0
    brain2 = np.asarray(load(training, 2, "t1").dataobj) > 0
    dice = 2 * (brain1 & brain2).sum() / (brain1.sum() + brain2.sum())
    assert dice < 0.97  # the anatomy is warped per subject, not the template every time
    other = generate_subject(1, "HGG", seed=1)
    assert not np.array_equal(other["images"]["t1"], np.asarray(load(training, 1, "t1").dataobj))


def test_same_seed_is_byte_identical(cohort, tmp_path):
    _, training = cohort
    # one process instead of two: the result must not depend on scheduling
    again = generate_phantom(tmp_path, N, seed=0, workers=1, progress=False)
    assert files_of(again) == files_of(training)
    for rel in files_of(training):
        assert (again / rel).read_bytes() == (training / rel).read_bytes(), rel


def test_rerun_skips_existing_subjects(cohort):
    out, training = cohort
    stamps = {p: p.stat().st_mtime_ns for p in training.rglob("*.nii.gz")}
    generate_phantom(out, N, seed=0, workers=2, progress=False)
    assert {p: p.stat().st_mtime_ns for p in training.rglob("*.nii.gz")} == stamps


def test_cli_and_figure(cohort, monkeypatch):
    out, training = cohort
    import gpcore.io

    titles = []
    real_save = gpcore.io.save_figure

    def save(fig, stem, **kw):
        titles.append(fig._suptitle.get_text())
        return real_save(fig, stem, **kw)

    monkeypatch.setattr(gpcore.io, "save_figure", save)
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["phantom", "--out", str(out), "--subjects", str(N), "--seed", "0",
                              "--workers", "1", "--figure"])
    assert args.func(args) == 0
    for ext in ("png", "pdf"):
        assert (out / f"phantom_example.{ext}").stat().st_size > 10_000
    assert "synthetic phantom" in titles[0]
    # phantom_figure alone returns both paths
    assert [p.suffix for p in phantom_figure(training, out / "again")] == [".png", ".pdf"]


def test_refuses_to_mix_cohorts_of_other_parameters(tmp_path):
    from gpcore.data.phantom import generate_phantom

    generate_phantom(tmp_path, 1, seed=3, workers=1, progress=False)
    with pytest.raises(FileExistsError, match="other parameters"):
        generate_phantom(tmp_path, 2, seed=3, workers=1, progress=False)
