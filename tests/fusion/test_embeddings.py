"""CXR embeddings: the as-of join under the leakage rule, embedding studies, the synthetic path."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ehr.schema import SchemaError
from fusion.embeddings import attach_embeddings, embed_cxr_table, synthetic_cxr_embeddings

T0 = pd.Timestamp("2024-01-01")


def _screens(hours=4, stays=(1, 2)):
    return pd.DataFrame({"stay_id": np.repeat(stays, hours),
                         "screen_time": np.tile(T0 + pd.to_timedelta(np.arange(1, hours + 1), unit="h"), len(stays))})


def test_a_film_is_seen_from_the_first_screen_at_or_after_its_time():
    films = pd.DataFrame({"study_id": [1, 2], "stay_id": [1, 1], "emb_cxr_000": [5.0, 7.0],
                          "time": [T0 + pd.Timedelta("1h1min"), T0 + pd.Timedelta("3h")]})
    out = attach_embeddings(_screens(), films)
    assert out["emb_cxr_000"].tolist()[:4] == pytest.approx([np.nan, 5.0, 7.0, 7.0], nan_ok=True)
    np.testing.assert_allclose(out["emb_cxr_age_h"].to_numpy()[:4], [np.nan, 59 / 60, 0.0, 1.0])
    assert out["emb_cxr_000"].iloc[4:].isna().all()  # stay 2 has no film; nothing crosses stays


def test_delay_makes_every_film_older_without_showing_it_early():
    films = pd.DataFrame({"study_id": [1], "stay_id": [1], "emb_cxr_000": [5.0], "time": [T0 + pd.Timedelta("30min")]})
    out = attach_embeddings(_screens(), films, delay_h=2.0)
    np.testing.assert_allclose(out["emb_cxr_age_h"].to_numpy()[:4], [np.nan, np.nan, 2.5, 3.5])


def test_ties_rows_order_and_replaced_columns():
    films = pd.DataFrame({"study_id": [9, 3], "stay_id": [2, 2], "emb_cxr_000": [1.0, 2.0],
                          "time": [T0 + pd.Timedelta("1h")] * 2})
    screens = _screens().iloc[::-1].reset_index(drop=True).assign(emb_cxr_000=-1.0, emb_cxr_999=-1.0)
    out = attach_embeddings(screens, films)
    assert "emb_cxr_999" not in out.columns
    assert out["stay_id"].tolist() == screens["stay_id"].tolist()
    assert out.loc[out.stay_id == 2, "emb_cxr_000"].tolist() == [1.0] * 4  # study 9 is the later of the tie


def test_image_files_are_attached_on_request_and_follow_the_film_seen():
    films = pd.DataFrame({"study_id": [1, 2], "stay_id": [1, 1], "emb_cxr_000": [5.0, 7.0],
                          "time": [T0 + pd.Timedelta("1h1min"), T0 + pd.Timedelta("3h")], "image_path": ["a", "b"]})
    assert "emb_cxr_image" not in attach_embeddings(_screens(), films).columns
    out = attach_embeddings(_screens(), films, image_paths=True)
    assert out["emb_cxr_image"].tolist() == [None, "a", "b", "b", None, None, None, None]
    with pytest.raises(SchemaError, match="image_path"):
        attach_embeddings(_screens(), films.drop(columns=["image_path"]), image_paths=True)


def test_bad_embedding_tables_are_refused():
    films = pd.DataFrame({"stay_id": [1], "time": [T0], "emb_cxr_000": [np.nan]})
    with pytest.raises(SchemaError, match="row 0 has a missing"):
        attach_embeddings(_screens(), films)
    with pytest.raises(SchemaError, match="emb_cxr_000"):
        attach_embeddings(_screens(), films.drop(columns=["emb_cxr_000"]))


def test_embed_cxr_table_counts_studies_without_an_image(tmp_path):
    from imaging.models import CXRFindingModel
    from imaging.synthetic_images import render_study

    Image.fromarray(render_study({"effusion": 1}, seed=0, size=32)).save(tmp_path / "a.png")
    cxr = pd.DataFrame({"study_id": [1, 2], "subject_id": [1, 1], "stay_id": [1, 1], "time": [T0, T0],
                        "image_path": ["a.png", None]})
    enc = CXRFindingModel(arch="small", findings=("effusion",), image_size=32)
    table = embed_cxr_table(enc, cxr, tmp_path)
    assert table["study_id"].tolist() == [1] and table.shape[1] == 5 + 128
    assert table["image_path"].tolist() == ["a.png"]  # kept: fine-tuning the encoder reads the film again
    assert table.attrs["report"] == {"studies": 2, "embedded": 1, "without_image": 1}
    np.testing.assert_allclose(table.filter(like="emb_cxr_").to_numpy()[0], enc.features(
        np.asarray(Image.open(tmp_path / "a.png")))[0], rtol=1e-5)


def test_synthetic_path_trains_on_training_films_and_embeds_all(tmp_path):
    from ehr.synthetic import generate_cohort

    cxr = generate_cohort(40, seed=3).cxr
    train = cxr["stay_id"].unique()[: len(cxr["stay_id"].unique()) // 2]
    table = synthetic_cxr_embeddings(cxr, train, tmp_path, seed=0, image_size=32, epochs=1, batch_size=16)
    assert len(table) == len(cxr) and table["study_id"].tolist() == cxr["study_id"].tolist()
    info = json.loads((tmp_path / "cxr_embeddings.json").read_text())
    assert info["encoder_training_studies"] == int(cxr["stay_id"].isin(train).sum())
    assert (tmp_path / "encoder" / "model.safetensors").is_file()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cxr_embeddings.parquet"), table)
