import numpy as np
import pandas as pd
import pytest
import torch

from ehr.schema import CXR_FINDINGS, SchemaError
from imaging.contract import ImageContractError
from imaging.models import CXRFindingModel
from imaging.scoring import score_cxr_table
from imaging.synthetic_images import render_cohort_images


def _cxr():
    return pd.DataFrame({"study_id": [10, 11, 12], "subject_id": [1, 1, 2], "stay_id": [1, 1, 2],
                         "time": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-01"]),
                         "image_path": [None, None, None], "truth_consolidation": [1, 0, 0],
                         "truth_effusion": [0, 1, 0], "truth_edema": [0, 0, 0], "truth_atelectasis": [0, 0, 1]})


def test_scores_every_finding_column(tmp_path):
    torch.manual_seed(0)
    cxr = render_cohort_images(_cxr(), tmp_path, seed=1, size=40)
    cxr.loc[2, "image_path"] = None  # a study with no image: no evidence
    m = CXRFindingModel(arch="small", image_size=32)
    out = score_cxr_table(m, cxr, tmp_path, batch_size=1)
    cols = [f"cxr_{f}" for f in CXR_FINDINGS]
    assert all(c in out.columns for c in cols)
    assert out.loc[:1, cols].notna().all().all() and out.loc[2, cols].isna().all()
    assert "cxr_consolidation" not in cxr.columns  # input untouched
    from imaging.contract import load_image, resize_uint8
    direct = m.predict_findings(np.stack([resize_uint8(load_image(tmp_path / p), 32) for p in cxr["image_path"][:2]]))
    np.testing.assert_allclose(out.loc[:1, cols].to_numpy(), direct.to_numpy(), rtol=1e-5)


def test_missing_file_names_study(tmp_path):
    cxr = _cxr()
    cxr["image_path"] = ["nope.png", None, None]
    with pytest.raises(ImageContractError, match="study_id 10.*nope.png"):
        score_cxr_table(CXRFindingModel(arch="small", image_size=32), cxr, tmp_path)


def test_contract_checked():
    with pytest.raises(SchemaError):
        score_cxr_table(CXRFindingModel(arch="small", image_size=32), _cxr().drop(columns="stay_id"))


def test_finding_map(tmp_path):
    cxr = render_cohort_images(_cxr(), tmp_path, seed=1, size=40)
    m = CXRFindingModel(arch="small", findings=("pneumonia",), image_size=32)
    out = score_cxr_table(m, cxr, tmp_path, finding_map={"pneumonia": "consolidation"})
    assert "cxr_consolidation" in out.columns and "cxr_pneumonia" not in out.columns
    with pytest.raises(KeyError, match="effusion"):
        score_cxr_table(m, cxr, tmp_path, finding_map={"effusion": "edema"})
