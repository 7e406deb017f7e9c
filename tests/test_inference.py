"""Inference over a slice store (predict_store) and over user volumes (segment)."""
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from fake_data import fake_subject
from gpcore.data import DataError
from gpcore.data.records import BRATS_CLASSES, BRATS_CONTRASTS
from gpcore.data.store import build_store
from gpcore.inference.predict import predict_store
from gpcore.models import create_model, save_model
from gpcore.inference.patient import RULE as PATIENT_RULE, patient_class
from gpcore.inference.segment import segment

SIZE = 32


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    items = [fake_subject(i, "HGG" if i % 2 else "LGG") for i in range(1, 4)]
    return build_store(items, out / "store", source={"kind": "fake"}, channels=BRATS_CONTRASTS,
                       size=SIZE, workers=1, progress=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "gp_unet.safetensors"
    torch.manual_seed(0)  # untrained weights: the same masks whatever ran before
    save_model(create_model("gp_unet", wf=2), path,
               extra={"input_size": SIZE, "normalisation": "max", "classes": list(BRATS_CLASSES),
                      "channels": list(BRATS_CONTRASTS)})
    return path


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from gpcore.data.phantom import generate_phantom

    return generate_phantom(tmp_path_factory.mktemp("phantom"), 2, seed=0, workers=2,
                            progress=False)


# --------------------------------------------------------------------------------------------
# predict_store
# --------------------------------------------------------------------------------------------
def test_predict_store_outputs(store, checkpoint, tmp_path):
    rows = np.array([5, 0, 3, 7, 1])
    out = predict_store(checkpoint, store, rows, tmp_path / "pred", batch_size=2, progress=False)
    k = len(BRATS_CLASSES)
    probs = np.load(out / "probabilities.npy")
    logits = np.load(out / "logits.npy")
    heat = np.load(out / "heatmaps.npy", mmap_mode="r")
    assert probs.shape == (5, k) and probs.dtype == np.float32
    assert logits.shape == (5, k) and logits.dtype == np.float32
    assert heat.shape == (5, k, SIZE, SIZE) and heat.dtype == np.float16
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    index = pd.read_csv(out / "index.csv", dtype={"patient_id": str})
    assert index["row"].tolist() == rows.tolist()
    assert np.array_equal(index["pred"], logits.argmax(1))
    assert index["patient_id"].tolist() == store.index.loc[rows, "patient_id"].tolist()
    info = json.loads((out / "predict.json").read_text())
    assert info["rows"] == 5 and info["batch_size"] == 2 and info["normalisation"] == "max"
    assert info["checkpoint"].endswith("gp_unet.safetensors") and info["device"] == "cpu"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["probabilities.npy", "logits.npy", "heatmaps.npy", "index.csv", "predict.json"])

    # the same slices through the model directly, in one batch, and in another row order
    import torch

    from gpcore.data.normalise import normalise

    model = create_model(checkpoint=checkpoint).eval()
    x = torch.stack([normalise(torch.from_numpy(store.images[r].astype(np.float32)))
                     for r in rows])
    with torch.inference_mode():
        ref_logits, ref_heat = model.forward_with_heatmap(x)
    assert np.allclose(logits, ref_logits.numpy(), atol=1e-4)
    assert np.allclose(heat, ref_heat.numpy(), atol=1e-2, rtol=1e-2)


def test_predict_store_all_rows_and_errors(store, checkpoint, tmp_path):
    out = predict_store(create_model(checkpoint=checkpoint), store.path, None, tmp_path / "all",
                        batch_size=64, progress=False)
    assert len(np.load(out / "probabilities.npy")) == len(store)
    bad = tmp_path / "big.safetensors"
    save_model(create_model("gp_unet", wf=2), bad, extra={"input_size": 64})
    with pytest.raises(ValueError, match="--size 64"):
        predict_store(bad, store, [0], tmp_path / "bad", progress=False)
    one = tmp_path / "one.safetensors"
    save_model(create_model("gp_unet", wf=2, in_channels=1), one, extra={"input_size": SIZE})
    with pytest.raises(ValueError, match="channels"):
        predict_store(one, store, [0], tmp_path / "bad", progress=False)
    with pytest.raises(ValueError, match="no rows"):
        predict_store(checkpoint, store, [], tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


# --------------------------------------------------------------------------------------------
# segment
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def segmented(phantom, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("segmented")
    return out, segment(checkpoint, phantom, out, batch_size=32, progress=False)


def test_segment_phantom_subjects(phantom, segmented):
    out, table = segmented
    ids = sorted(p.name for p in phantom.iterdir() if p.is_dir())
    assert table["subject_id"].tolist() == ids
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folders
    for sid in ids:
        folder = out / sid
        ref = nib.load(phantom / sid / f"{sid}_t1.nii.gz")
        heat = nib.load(folder / f"{sid}_heatmap.nii.gz")
        mask = nib.load(folder / f"{sid}_mask.nii.gz")
        assert np.allclose(heat.affine, ref.affine) and np.allclose(mask.affine, ref.affine)
        assert mask.shape == ref.shape and mask.get_data_dtype() == np.uint8
        assert heat.shape == (*ref.shape, len(BRATS_CLASSES))
        assert heat.get_data_dtype() == np.float32
        t1 = np.asanyarray(ref.dataobj)
        vol = np.stack([np.asanyarray(nib.load(phantom / sid / f"{sid}_{c}.nii.gz").dataobj)
                        for c in BRATS_CONTRASTS])
        non_empty = np.flatnonzero((vol > 0).reshape(-1, t1.shape[-1]).any(0))
        slices = pd.read_csv(folder / f"{sid}_slices.csv")
        assert slices["slice_index"].tolist() == non_empty.tolist()
        assert np.allclose(slices[[f"prob_{c}" for c in BRATS_CLASSES]].sum(axis=1), 1, atol=1e-5)
        m = np.asanyarray(mask.dataobj)
        h = np.asanyarray(heat.dataobj)
        empty = np.setdiff1d(np.arange(t1.shape[-1]), non_empty)
        assert not m[..., empty].any() and not h[:, :, empty].any()
        healthy = slices.loc[slices["pred_class"] == "Healthy", "slice_index"]
        assert not m[..., healthy.to_numpy()].any()
        assert slices["mask_area"].tolist() == m[..., non_empty].reshape(-1, len(non_empty)) \
            .sum(0).tolist()
        summary = json.loads((folder / f"{sid}_summary.json").read_text())
        assert summary["predicted_class"] in BRATS_CLASSES
        assert summary["rule"] == PATIENT_RULE
        # the class written is the rule the evaluation scores, applied to the slices written
        probs = slices[[f"prob_{c}" for c in BRATS_CLASSES]].to_numpy()
        assert summary["predicted_class"] == patient_class(probs, BRATS_CLASSES, 0).name
        assert summary["tumour_volume_voxels"] == int(m.sum())
        assert summary["offset"] == 0.3 and summary["model"] == "gp_unet"
        assert summary["checkpoint"].endswith("gp_unet.safetensors")
        assert summary["n_slices"] == t1.shape[-1]
        assert summary["n_empty_slices"] == len(empty)
        assert (folder / f"{sid}_overview.png").stat().st_size > 1000
    assert len(pd.read_csv(out / "subjects.csv")) == len(ids)


def _stack_4d(phantom, sid, path, z=slice(70, 78)):
    """One phantom subject as a single 4D (X, Y, Z, 4) volume (a few slices, for speed)."""
    ref = nib.load(phantom / sid / f"{sid}_t1.nii.gz")
    data = np.stack([np.asanyarray(nib.load(phantom / sid / f"{sid}_{c}.nii.gz").dataobj)[..., z]
                     for c in BRATS_CONTRASTS], axis=-1)
    nib.save(nib.Nifti1Image(data, ref.affine), path)
    return data


@pytest.mark.parametrize("name,kw", [("cnn_gradcam", dict(depth=18, width=8, hidden=8)),
                                     ("mprotonet", dict(depth=18, width=8, prototype_dim=8))])
def test_segment_with_a_baseline(phantom, tmp_path, name, kw):
    """The baselines' maps (Grad-CAM, prototype activations) go through `segment` like a GP
    model's: it read the GP head's width once and failed on them."""
    path = tmp_path / f"{name}.safetensors"
    torch.manual_seed(0)
    save_model(create_model(name, **kw), path,
               extra={"input_size": SIZE, "normalisation": "max", "classes": list(BRATS_CLASSES),
                      "channels": list(BRATS_CONTRASTS)})
    one = sorted(p for p in phantom.iterdir() if p.is_dir())[0]
    table = segment(path, one, tmp_path / "out", offset=0.3, batch_size=16, progress=False)
    assert table["subject_id"].tolist() == [one.name]
    ref = nib.load(one / f"{one.name}_t1.nii.gz")
    heat = nib.load(tmp_path / "out" / one.name / f"{one.name}_heatmap.nii.gz")
    assert heat.shape == (*ref.shape, len(BRATS_CLASSES))
    assert np.isfinite(np.asanyarray(heat.dataobj)).all()
    summary = json.loads((tmp_path / "out" / one.name / f"{one.name}_summary.json").read_text())
    assert summary["model"] == name


def test_segment_single_4d_volume(phantom, checkpoint, tmp_path):
    sid = "BraTS20_Training_001"
    src = tmp_path / "in" / "patient.nii.gz"
    src.parent.mkdir()
    data = _stack_4d(phantom, sid, src)
    table = segment(checkpoint, src, tmp_path / "out", offset=0.5, cleanup=False,
                    progress=False)
    assert table["subject_id"].tolist() == ["patient"]
    folder = tmp_path / "out" / "patient"
    heat = nib.load(folder / "patient_heatmap.nii.gz")
    mask = nib.load(folder / "patient_mask.nii.gz")
    assert heat.shape == (*data.shape[:3], 3) and mask.shape == data.shape[:3]
    assert np.allclose(mask.affine, nib.load(src).affine)
    summary = json.loads((folder / "patient_summary.json").read_text())
    assert summary["offset"] == 0.5 and summary["cleanup"] is False
    assert len(pd.read_csv(folder / "patient_slices.csv")) == data.shape[2]
    # a 3D volume is one contrast: the 4-contrast model refuses it with the file's name
    one = tmp_path / "in3d" / "t1.nii.gz"
    one.parent.mkdir()
    nib.save(nib.Nifti1Image(data[..., 0], np.eye(4)), one)
    with pytest.raises(DataError, match="t1.nii.gz.*1 contrast"):
        segment(checkpoint, one, tmp_path / "out3d", progress=False)
    assert not (tmp_path / "out3d" / "t1").exists()


def test_segment_truncated_file(phantom, checkpoint, tmp_path):
    sid = "BraTS20_Training_002"
    good = tmp_path / "good.nii.gz"
    _stack_4d(phantom, sid, good, z=slice(70, 72))
    folder = tmp_path / "in"
    folder.mkdir()
    raw = good.read_bytes()
    (folder / "broken.nii.gz").write_bytes(raw[: len(raw) // 2])
    (folder / "fine.nii.gz").write_bytes(raw)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="broken.nii.gz.*truncated or corrupt"):
        segment(checkpoint, folder, out, progress=False)
    assert not (out / "broken").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    table = segment(checkpoint, folder, out, on_error="skip", progress=False)
    assert table["subject_id"].tolist() == ["fine"]
    assert not (out / "broken").exists() and (out / "fine" / "fine_mask.nii.gz").is_file()
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["input"].str.endswith("broken.nii.gz").tolist() == [True]


def test_segment_subject_folder_with_missing_contrast(phantom, checkpoint, tmp_path):
    """Subject folders: a missing contrast is reported with the file it expected."""
    sid = "BraTS20_Training_001"
    subj = tmp_path / "data" / sid
    subj.mkdir(parents=True)
    for c in ("t1", "t2", "t1ce"):
        (subj / f"{sid}_{c}.nii.gz").symlink_to(phantom / sid / f"{sid}_{c}.nii.gz")
    with pytest.raises(DataError, match=f"{sid}_flair.nii.gz"):
        segment(checkpoint, tmp_path / "data", tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / sid).exists()


def test_overview_shows_the_largest_masks():
    from gpcore.inference.overview import overview_slices

    mask = np.zeros((8, 8, 6), np.uint8)  # unsigned, as written to NIfTI
    mask[:3, :3, 4] = 1
    mask[:1, :1, 1] = 1
    mask[:2, :2, 2] = 1
    assert overview_slices(mask, {k: "HGG" for k in range(6)}, n=2) == [2, 4]
    assert overview_slices(np.zeros_like(mask), {1: "Healthy", 2: "LGG", 3: "HGG"}, n=2) == [1, 2]


@pytest.mark.parametrize("axcodes", [("R", "A", "S"), ("S", "R", "A")])
def test_segment_is_independent_of_the_input_orientation(phantom, checkpoint, tmp_path,
                                                         axcodes):
    """The same subject stored RAS, or sagittal-first, gives the same mask in world space as
    the LPS original (issue 15: user volumes as they come), written in the input's voxel order
    with its affine."""
    from nibabel import orientations as nio

    sid = "BraTS20_Training_001"
    lps = tmp_path / "lps" / "patient.nii.gz"
    lps.parent.mkdir()
    _stack_4d(phantom, sid, lps, z=slice(70, 74))
    img = nib.load(lps)
    ornt = nio.ornt_transform(nio.io_orientation(img.affine), nio.axcodes2ornt(axcodes))
    other = tmp_path / "other" / "patient.nii.gz"
    other.parent.mkdir()
    nib.save(img.as_reoriented(ornt), other)
    assert nib.aff2axcodes(nib.load(other).affine) == axcodes
    kw = dict(offset=0.3, progress=False)
    segment(checkpoint, lps, tmp_path / "out_lps", **kw)
    segment(checkpoint, other, tmp_path / "out_other", **kw)
    ref = nib.load(tmp_path / "out_lps" / "patient" / "patient_mask.nii.gz")
    got = nib.load(tmp_path / "out_other" / "patient" / "patient_mask.nii.gz")
    assert got.shape == nib.load(other).shape[:3] and np.allclose(got.affine, nib.load(other).affine)
    back = nib.load(tmp_path / "out_other" / "patient" / "patient_mask.nii.gz").as_reoriented(
        nio.ornt_transform(nio.io_orientation(got.affine), nio.io_orientation(ref.affine)))
    assert np.allclose(back.affine, ref.affine)
    assert np.array_equal(np.asanyarray(back.dataobj), np.asanyarray(ref.dataobj))
    assert np.asanyarray(ref.dataobj).any()  # a non-trivial mask was compared
    summary = json.loads((tmp_path / "out_other" / "patient" / "patient_summary.json").read_text())
    assert summary["input_orientation"] == "".join(axcodes)


def test_square_fov_padding():
    from gpcore.inference.segment import square_fov

    assert square_fov((240, 240), (1.0, 1.0)) == ((0, 0), (0, 0))
    assert square_fov((120, 240), (2.0, 1.0)) == ((0, 0), (0, 0))  # square FOV, 2:1 voxels
    assert square_fov((240, 200), (1.0, 1.0)) == ((0, 0), (20, 20))
    assert square_fov((100, 240), (1.2, 1.0)) == ((50, 50), (0, 0))  # 120 mm -> 240 mm


def test_segment_pads_a_non_square_field_of_view(phantom, checkpoint, tmp_path):
    """A volume cropped to 240 x 200 (background rows removed) is padded back to a square
    field of view before resizing: its mask is the full volume's, cropped (issue 15: other
    matrix sizes), where a plain resize would have stretched the brain by 20 %."""
    sid = "BraTS20_Training_001"
    full = tmp_path / "full" / "patient.nii.gz"
    full.parent.mkdir()
    data = _stack_4d(phantom, sid, full, z=slice(70, 74))
    assert not data[:, :20].any() and not data[:, 220:].any()  # background rows only
    img = nib.load(full)
    crop = tmp_path / "crop" / "patient.nii.gz"
    crop.parent.mkdir()
    nib.save(img.slicer[:, 20:220], crop)
    kw = dict(offset=0.3, progress=False)
    segment(checkpoint, full, tmp_path / "out_full", **kw)
    segment(checkpoint, crop, tmp_path / "out_crop", **kw)
    ref = np.asanyarray(nib.load(tmp_path / "out_full/patient/patient_mask.nii.gz").dataobj)
    got = nib.load(tmp_path / "out_crop/patient/patient_mask.nii.gz")
    assert got.shape == (240, 200, 4) and np.allclose(got.affine, nib.load(crop).affine)
    assert ref.any() and np.array_equal(np.asanyarray(got.dataobj), ref[:, 20:220])


def test_segment_rejects_non_finite_voxels_by_name(phantom, checkpoint, tmp_path):
    """A user volume with NaN voxels is refused with the file's name and the fix; nothing is
    written for it."""
    sid = "BraTS20_Training_001"
    src = tmp_path / "in" / "nan_patient.nii.gz"
    src.parent.mkdir()
    data = _stack_4d(phantom, sid, src, z=slice(70, 72)).astype(np.float32)
    data[100, 100, 0, 2] = np.nan
    nib.save(nib.Nifti1Image(data, nib.load(src).affine), src)
    with pytest.raises(DataError, match=r"nan_patient\.nii\.gz: 1 NaN/Inf voxels; replace"):
        segment(checkpoint, src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "nan_patient").exists()
