import numpy as np
import pandas as pd
import pytest

from ehr.schema import CXR_FINDINGS
from imaging.contract import load_image
from imaging.synthetic_images import render_cohort_images, render_study, sample_real_images


def test_deterministic_uint8():
    a = render_study({"edema": 1}, seed=5, size=64)
    assert a.dtype == np.uint8 and a.shape == (64, 64)
    assert np.array_equal(a, render_study({"edema": 1}, seed=5, size=64))
    assert not np.array_equal(a, render_study({"edema": 1}, seed=6, size=64))


@pytest.mark.parametrize("finding", CXR_FINDINGS)
def test_each_finding_adds_opacity_inside_the_chest(finding):
    diffs = []
    for seed in range(4):
        base = render_study({}, seed=seed, size=96).astype(float)
        with_f = render_study({finding: 1}, seed=seed, size=96).astype(float)
        d = with_f - base
        diffs.append(d)
        assert d.sum() > 0  # opacity = brighter
        # nothing changes outside the thorax
        assert np.abs(d[:, :5]).max() == 0 and np.abs(d[-5:, :]).max() == 0
    assert min(d.max() for d in diffs) >= 10  # visible: at least 10 grey levels somewhere, even when faint


def test_findings_differ_from_each_other():
    imgs = {f: render_study({f: 1}, seed=3, size=96).astype(float) for f in CXR_FINDINGS}
    base = render_study({}, seed=3, size=96).astype(float)
    masks = {f: (imgs[f] - base) > 10 for f in CXR_FINDINGS}
    assert masks["edema"][:, :48].any() and masks["edema"][:, 48:].any()  # bilateral
    rows_eff = np.flatnonzero(masks["effusion"].any(axis=1))
    rows_edema = np.flatnonzero(masks["edema"].any(axis=1))
    assert rows_eff.mean() > rows_edema.mean()  # effusion is basal, edema perihilar
    for f in CXR_FINDINGS:
        for g in CXR_FINDINGS:
            if f < g:
                assert not np.array_equal(imgs[f], imgs[g])


def test_truth_prefix_and_unknown_finding():
    assert np.array_equal(render_study({"truth_effusion": 1}, 1, 32), render_study({"effusion": 1}, 1, 32))
    with pytest.raises(KeyError, match="pneumothorax"):
        render_study({"pneumothorax": 1}, 1, 32)


def _cxr(n=4):
    return pd.DataFrame({"study_id": np.arange(1, n + 1), "subject_id": np.arange(n), "stay_id": np.arange(n),
                         "time": pd.to_datetime(["2020-01-01"] * n), "image_path": [None] * n,
                         "truth_consolidation": [1, 0, 1, 0][:n], "truth_effusion": [0, 1, 0, 0][:n]})


def test_render_cohort_images(tmp_path):
    out = render_cohort_images(_cxr(), tmp_path, seed=0, size=48)
    assert out["image_path"].tolist() == [f"cxr_images/study_{i}.png" for i in range(1, 5)]
    imgs = [load_image(tmp_path / p) for p in out["image_path"]]
    assert imgs[0].shape == (48, 48)
    again = render_cohort_images(_cxr(), tmp_path / "b", seed=0, size=48)
    assert np.array_equal(load_image(tmp_path / "b" / again["image_path"][1]), imgs[1])


@pytest.mark.realdata
def test_sample_real_images_by_finding(cxr_data_dir):
    root = cxr_data_dir / "kermany_pediatric_224"
    out = sample_real_images(_cxr(), root, seed=0)
    assert all("/PNEUMONIA/" in p for p in out["image_path"][[0, 2]])
    assert all("/NORMAL/" in p for p in out["image_path"][[1, 3]])
    assert load_image(out["image_path"][0]).shape == (224, 224)
    pool = ["images/train/PNEUMONIA/person1_bacteria_1.png", "images/train/NORMAL/IM-0115-0001.png"]
    only = sample_real_images(_cxr(), root, seed=0, only_images=pool)
    assert set(only["image_path"]) == {str(root.resolve() / p) for p in pool}


def test_conspicuity_scales_opacity():
    base = render_study({}, seed=2, size=64).astype(float)
    faint = render_study({"consolidation": 1}, seed=2, size=64, conspicuity=0.3).astype(float) - base
    strong = render_study({"consolidation": 1}, seed=2, size=64, conspicuity=1.0).astype(float) - base
    assert 0 < faint.sum() < strong.sum()
