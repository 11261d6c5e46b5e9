"""Synthetic cohorts written as MIMIC-IV tables read back through the (streaming) MIMIC reader."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr.sources.mimic import read_mimic
from ehr.sources.mimic import tables as mimic_tables
from ehr.synthetic import generate_chunks
from ehr.synthetic.mimic_format import mimic_items_for_synthetic, write_mimic_tables


def test_round_trip_through_the_mimic_reader_in_small_blocks(tmp_path, monkeypatch):
    chunks = list(generate_chunks(12, seed=3, chunk_stays=5))
    root = write_mimic_tables(chunks, tmp_path / "m4")
    # blocks of 4 kB: the reader's streaming (row numbers, item filter) runs over many blocks
    monkeypatch.setattr(mimic_tables, "BLOCK_BYTES", 4096)
    # the writer has no cultures or prescriptions (no onsets come back): name them as missing
    back = read_mimic(root, allow_missing=("microbiologyevents", "prescriptions"))
    stays = pd.concat([c.stays for c in chunks])
    events = pd.concat([c.events for c in chunks])
    assert sorted(back.stays.stay_id) == sorted(stays.stay_id)
    assert back.report.count(problem="wrong number of fields") == 0
    mapped = mimic_items_for_synthetic()
    for concept in ("hr", "crea", "lact"):
        assert concept in mapped.index
        want = events.loc[events.concept == concept].sort_values(["stay_id", "time"], kind="stable")
        got = back.events.loc[back.events.concept == concept].sort_values(["stay_id", "time"], kind="stable")
        assert len(got) == len(want) > 0, concept
        np.testing.assert_allclose(got.numeric_value, want.numeric_value, rtol=1e-6)
        assert (got.time.to_numpy() == want.time.to_numpy()).all()
