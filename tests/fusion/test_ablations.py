"""fusion.ablations: the ablation's data (no leakage), fusion table and robustness table (tiny models)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion._demo import demo_screens
from fusion.ablations import fit_ablation_models, fusion_table, pneumonia_groups, robustness_ci_table, \
    synthetic_fusion_data
from fusion.robustness import robustness_table


@pytest.fixture(scope="module")
def ablation():
    """Screens with films (every hour has new data), their stays, two fitted models and their predictions."""
    s = demo_screens(n_stays=30, seed=0, hours=8, images=True).assign(new_data=True)
    stays = s.groupby("stay_id").agg(last=("screen_time", "max"), septic=("label", "max")).reset_index()
    stays["onset_time"] = pd.to_datetime(np.where(stays["septic"] == 1, stays["last"] + pd.Timedelta(hours=1),
                                                  pd.NaT))
    stays["sepsis"] = stays["septic"].astype(bool)
    stays["pneumonia"] = stays["stay_id"] % 2 == 0
    models, fits = fit_ablation_models(s, ["sequence", "late"], hidden=4, head_hidden=4, epochs=1)
    pred = pd.concat([m.predictions(s, split="test") for m in models.values()], ignore_index=True)
    return s, stays, models, fits, pred


def test_pneumonia_groups_keep_non_septic_and_pneumonia_septic_stays():
    stays = pd.DataFrame({"stay_id": [1, 2, 3, 4], "sepsis": [False, True, True, False],
                          "pneumonia": [None, True, False, True]})
    groups = pneumonia_groups(stays)
    assert groups["all"]["stay_id"].tolist() == [1, 2, 3, 4]
    assert groups["pneumonia-associated"]["stay_id"].tolist() == [1, 2, 4]


def test_fusion_table_estimates_and_paired_differences(ablation):
    s, stays, models, fits, pred = ablation
    assert list(fits["model"]) == ["sequence", "fusion_late"] and (fits["epochs"] >= 1).all()
    table, diff = fusion_table(pred, s, pneumonia_groups(stays), n_boot=20)
    assert set(table["group"]) == {"all", "pneumonia-associated"} and set(table["metric"]) == {"auroc", "auprc"}
    assert (table["ci_low"] <= table["estimate"]).all() and (table["estimate"] <= table["ci_high"]).all()
    # the same AUROC/AUPRC as computed directly, every screen having new data
    direct = robustness_table(models, s, conditions={"observed": 0.0}).set_index("model")
    est = table[table.group == "all"].pivot(index="model", columns="metric", values="estimate")
    assert np.allclose(est.loc[direct.index, "auroc"], direct["auroc"])
    assert np.allclose(est.loc[direct.index, "auprc"], direct["auprc"])
    d = diff[(diff.group == "all") & (diff.metric == "auroc")].set_index("model")["difference"]
    assert list(d.index) == ["fusion_late"]
    assert d["fusion_late"] == pytest.approx(est.loc["fusion_late", "auroc"] - est.loc["sequence", "auroc"])


def test_robustness_ci_table_changes_against_the_films_as_observed(ablation):
    s, stays, models, _, _ = ablation
    rob = robustness_ci_table(models, s, pneumonia_groups(stays), n_boot=20)
    assert len(rob) == 2 * 2 * 4
    seq = rob[rob.model == "sequence"]
    assert (seq["delta_auroc"] == 0).all()          # reads no film: nothing changes
    observed = rob[rob.condition == "observed"]
    assert (observed["delta_auroc"] == 0).all() and observed["ci_low"].isna().all()
    direct = robustness_table(models, s).set_index(["model", "condition"])
    mine = rob[rob.group == "all"].set_index(["model", "condition"])
    assert np.allclose(mine.loc[direct.index, "auroc"], direct["auroc"])
    assert np.allclose(mine.loc[direct.index, "delta_auroc"], direct["delta_auroc"])
    assert not np.allclose(mine.loc["fusion_late", "delta_auroc"], 0)   # this model does read the films


def test_synthetic_fusion_data_trains_the_encoder_on_training_films_only(tmp_path):
    from ehr.splits import split_patients
    from ehr.synthetic import generate_cohort

    data = synthetic_fusion_data(80, tmp_path, seed=1, image_size=16, encoder_epochs=1)
    split = split_patients(generate_cohort(80, seed=1).stays, seed=1)
    where = data.embeddings["stay_id"].map(split)
    assert data.encoder_info["encoder_training_studies"] == (where == "train").sum() < len(data.embeddings)
    assert set(data.test["stay_id"]) == set(data.stays_test["stay_id"]) == set(split.index[split == "test"])
    assert not set(data.train["subject_id"]) & set(data.test["subject_id"])
    assert data.test["emb_cxr_age_h"].notna().any() and "emb_cxr_000" in data.train.columns
