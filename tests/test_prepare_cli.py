"""``gpcore preprocess`` and ``gpcore split`` on a small manifest dataset the test writes."""
import numpy as np
import pandas as pd
from PIL import Image

from gpcore.cli import main
from gpcore.data.figures import class_counts, plot_store_examples
from gpcore.data.splits import is_leaky, load_split
from gpcore.data.store import SliceStore


def _dataset(root, n_patients=8, per_patient=3):
    rng = np.random.default_rng(0)
    rows = []
    for p in range(n_patients):
        for s in range(per_patient):
            name = f"p{p}_s{s}"
            img = rng.integers(0, 200, (32, 32), dtype=np.uint8)
            mask = np.zeros((32, 32), np.uint8)
            mask[8:16, 10:20] = 255
            Image.fromarray(img).save(root / f"{name}.png")
            Image.fromarray(mask).save(root / f"{name}_mask.png")
            rows.append({"image": f"{name}.png", "mask": f"{name}_mask.png", "label": 1 + p % 2,
                         "label_name": ["cat", "dog"][p % 2], "patient_id": f"P{p}"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def test_preprocess_and_split_commands(tmp_path, capsys):
    csv = _dataset(tmp_path)
    out = tmp_path / "store"
    assert main(["preprocess", "--source", "manifest", "--input", str(csv), "--out", str(out),
                 "--size", "16", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "24 slices of 8 patients" in printed and "cat" in printed
    store = SliceStore(out)
    assert store.images.shape == (24, 1, 16, 16) and store.classes == ["cat", "dog"]
    counts = class_counts(store)
    assert counts.slices.tolist() == [12, 12, 24]

    assert main(["split", "--store", str(out), "--folds", "4", "--val-fraction", "0.34"]) == 0
    split = load_split(out / "split_patient.csv")
    assert not is_leaky(split) and split.groupby("fold").patient_id.nunique().eq(8).all()
    assert main(["split", "--store", str(out), "--protocol", "published"]) == 0
    assert "leaky" in capsys.readouterr().out
    assert is_leaky(load_split(out / "split_published.csv"))

    paths = plot_store_examples(store, tmp_path / "fig", title="test")
    assert all(p.stat().st_size > 1000 for p in paths)
