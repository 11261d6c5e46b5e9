import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ehr.schema import CXR_FINDINGS
from imaging.contract import ImageContractError
from ehr.splits import holdout_groups
from imaging.datasets import finding_columns, patient_groups, read_image_folder, read_npz


def test_finding_columns_drop_negative_label_and_metadata(tiny_folder):
    labels = pd.read_csv(tiny_folder / "labels.csv")
    assert finding_columns(labels) == ("effusion", "edema")


def test_read_image_folder(tiny_folder):
    s = read_image_folder(tiny_folder, 32)
    assert s.images.shape == (12, 32, 32) and s.images.dtype == np.uint8
    assert s.findings == ("effusion", "edema") and s.labels.shape == (12, 2)
    assert s.labels[:, 0].tolist() == [i % 2 for i in range(12)]
    assert s.groups.tolist() == [i // 2 for i in range(12)]  # patient_id groups
    only = read_image_folder(tiny_folder, 32, findings=("Effusion",))  # case-insensitive match
    assert only.findings == ("Effusion",) and only.labels.shape == (12, 1)
    with pytest.raises(KeyError, match="consolidation"):
        read_image_folder(tiny_folder, 32, findings=("consolidation",))


def test_bad_label_and_bad_image_named(tiny_folder, tmp_path):
    labels = pd.read_csv(tiny_folder / "labels.csv")
    labels["image"] = [str(tiny_folder / p) for p in labels["image"]]
    labels.loc[3, "effusion"] = 2
    labels.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match=r"row 5 .*'effusion'.*not 0/1"):
        read_image_folder(tmp_path, 32, findings=("effusion",))
    labels.loc[3, "effusion"] = 1
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    labels.loc[4, "image"] = "broken.png"
    labels.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ImageContractError, match="broken.png"):
        read_image_folder(tmp_path, 32, findings=("effusion",))


def test_npz_reader(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "pneumoniamnist.npz", train_images=imgs, train_labels=np.array([[0], [1]] * 3),
             val_images=imgs[:2], val_labels=np.array([[0], [1]]))
    s = read_npz(tmp_path / "pneumoniamnist.npz", split="train", image_size=32, findings=("pneumonia",))
    assert s.images.shape == (6, 32, 32) and s.labels[:, 0].tolist() == [0, 1] * 3
    assert read_npz(tmp_path / "pneumoniamnist.npz", split="val").findings == ("label_0",)
    np.savez(tmp_path / "rgb.npz", train_images=rng.integers(0, 256, (2, 28, 28, 3), dtype=np.uint8),
             train_labels=np.array([[0], [1]]))
    with pytest.raises(ImageContractError, match="3 channels"):
        read_npz(tmp_path / "rgb.npz")
    with pytest.raises(KeyError, match="test_images"):
        read_npz(tmp_path / "pneumoniamnist.npz", split="test")


def test_patient_groups_merge_duplicates():
    t = pd.DataFrame({
        "image": ["a", "b", "c", "d", "e"],
        "orig_filename": ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg", "IM-0001-0001.jpeg",
                          "NORMAL2-IM-0001-0001.jpeg", "person9_virus_3.jpeg"],
        "pixel_dup_of": [None, None, None, None, "d"],
    })
    g = patient_groups(t)
    assert g[0] == g[1]          # same patient
    assert g[2] != g[3]          # IM-0001 and NORMAL2-IM-0001 are different series
    assert g[4] == g[3]          # pixel duplicate joins its original's group
    assert len(set(g.tolist())) == 3


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=2, max_size=60).filter(lambda g: len(set(g)) >= 2),
       st.floats(0.05, 0.9), st.integers(0, 10))
def test_holdout_of_image_groups_never_straddles(groups, frac, seed):
    groups = np.array(groups)
    tr, va = holdout_groups(groups, frac, random_state=seed)
    assert len(tr) and len(va)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(len(groups)))
    assert not set(groups[tr]) & set(groups[va])


@pytest.mark.realdata
def test_kermany_folder_and_duplicate_safe_split(cxr_data_dir):
    root = cxr_data_dir / "kermany_pediatric_224"
    labels = pd.read_csv(root / "labels.csv")
    assert finding_columns(labels) == ("pneumonia",)
    groups = patient_groups(labels)
    tr, va = holdout_groups(groups, 0.2, random_state=0)
    assert 0.17 < len(va) / len(labels) < 0.23
    pos = {img: i for i, img in enumerate(labels["image"])}
    dups = labels["pixel_dup_of"].notna().to_numpy()
    assert dups.sum() == 26
    in_val = np.zeros(len(labels), bool)
    in_val[va] = True
    for i in np.flatnonzero(dups):
        assert in_val[i] == in_val[pos[labels["pixel_dup_of"].iloc[i]]]
    s = read_image_folder(root, 64, limit=6)
    assert s.images.shape == (6, 64, 64) and s.findings == ("pneumonia",)


@pytest.mark.realdata
def test_nih_folder_multilabel(cxr_data_dir):
    s = read_image_folder(cxr_data_dir / "nih_cxr14_sample", 64, findings=CXR_FINDINGS, limit=8)
    assert s.images.shape == (8, 64, 64) and s.labels.shape == (8, 4)
    assert s.findings == CXR_FINDINGS
    all14 = read_image_folder(cxr_data_dir / "nih_cxr14_sample", 32, limit=4)
    assert "Effusion" in all14.findings and "no_finding" not in all14.findings


def test_internal_splits_are_group_safe_and_fixed():
    from imaging.datasets import internal_splits

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(200), rng.integers(1, 4, 200))
    y = (groups % 4 != 0).astype(float)  # a class per patient, 75 % positive
    parts = internal_splits(groups, y)
    allidx = np.concatenate(list(parts.values()))
    assert sorted(allidx.tolist()) == list(range(len(groups)))
    sets = {k: set(groups[v]) for k, v in parts.items()}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    assert len(sets["test"]) == 30 and abs(len(sets["val"]) - 30) <= 1  # 15 % of 200 patients each (rounded up)
    for v in parts.values():
        assert 0.6 < y[v].mean() < 0.9  # stratified
    again = internal_splits(groups, y)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)


def test_class_folders_and_cache(tmp_path, monkeypatch):
    import os

    import imaging.datasets
    from imaging.datasets import cached_image_folder, read_class_folders, read_labelled

    for cls, n in (("NORMAL", 2), ("PNEUMONIA", 3)):
        (tmp_path / "cls" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 24), dtype=np.uint8)).save(
                tmp_path / "cls" / cls / f"{i}.png")
    s = read_labelled(tmp_path / "cls", 16, ("pneumonia",))
    assert s.images.shape == (5, 16, 16) and s.labels[:, 0].tolist() == [0, 0, 1, 1, 1]
    assert s.ids[0] == "NORMAL/0.png"
    (tmp_path / "cls" / "OTHER").mkdir()
    with pytest.raises(ValueError, match="OTHER"):
        read_class_folders(tmp_path / "cls", 16, ("pneumonia",))
    with pytest.raises(FileNotFoundError, match="no labels.csv"):
        read_labelled(tmp_path / "cls" / "OTHER", 16, ("pneumonia",))

    root = tmp_path / "lab"
    root.mkdir()
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 20), dtype=np.uint8)).save(root / f"{i}.png")
    pd.DataFrame({"image": [f"{i}.png" for i in range(4)], "pneumonia": [0, 1, 0, 1]}).to_csv(root / "labels.csv",
                                                                                             index=False)
    first = cached_image_folder(root, 16, tmp_path / "c.npz")
    real = imaging.datasets.read_image_folder
    with monkeypatch.context() as m:  # the cache answers without reading images again
        m.setattr(imaging.datasets, "read_image_folder", lambda *a, **k: pytest.fail("images read again"))
        again = cached_image_folder(root, 16, tmp_path / "c.npz")
    assert np.array_equal(first.images, again.images) and again.findings == ("pneumonia",)
    # an image edited in place (same name, same labels.csv): rebuilt, never the stale pixels
    Image.fromarray(np.tile(np.arange(0, 200, 10, dtype=np.uint8), (20, 1))).save(root / "0.png")
    st = (root / "0.png").stat()
    os.utime(root / "0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    edited = cached_image_folder(root, 16, tmp_path / "c.npz")
    assert not np.array_equal(edited.images[0], first.images[0])
    assert np.array_equal(edited.images[1:], first.images[1:])
    assert imaging.datasets.read_image_folder is real
    (root / "0.png").unlink()
    pd.DataFrame({"image": [f"{i}.png" for i in range(1, 4)], "pneumonia": [1, 0, 1]}).to_csv(root / "labels.csv",
                                                                                             index=False)
    assert len(cached_image_folder(root, 16, tmp_path / "c.npz")) == 3  # labels changed: rebuilt
