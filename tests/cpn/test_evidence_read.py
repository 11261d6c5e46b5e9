"""build_evidence reads the numeric columns as one block: the same evidence as reading each column
on its own, whatever the columns' dtypes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpn.evidence import build_evidence, network_info


def _reference(screens, info, half_lives):
    """Each column read on its own (a frame of single-column blocks, all float)."""
    alone = pd.DataFrame({c: (screens[c].to_numpy(dtype=float) if c not in ("department", "screen_time")
                              else screens[c].to_numpy())
                          for c in screens.columns if c != "sex"})
    return build_evidence(alone, info, half_lives, details=True)


@pytest.mark.parametrize("column_read_rows", [20_000, 1])
def test_block_read_equals_column_reads(full_net, sampled_screens, column_read_rows, monkeypatch):
    # a batch is read as one block, a large table (here: from 1 row on) column by column
    from cpn import evidence
    from cpn.sampling import sample_screens

    monkeypatch.setattr(evidence, "_COLUMN_READ_ROWS", column_read_rows)
    info = network_info(full_net)
    s = sample_screens(full_net, 300, seed=9)
    s["age"] = s["age"].astype(object).where(s.index % 7 != 0, None)  # an object column with None
    s["hr_age_h"] = s["hr_age_h"].astype("Float64")                   # a nullable float column
    s["hours_since_admit"] = s["hours_since_admit"].round().astype("int64")
    ev, det = build_evidence(s, info, {"hr": 4.0, "cxr": 24.0}, details=True)
    ev_ref, det_ref = _reference(s, info, {"hr": 4.0, "cxr": 24.0})
    assert ev.keys() == ev_ref.keys() and det.keys() == det_ref.keys()
    for v in ev:
        np.testing.assert_array_equal(ev[v], ev_ref[v])
        for a, b in zip(det[v], det_ref[v]):
            assert (a is None and b is None) or np.array_equal(a, b, equal_nan=True)


def test_builder_reuses_its_reading_and_equals_build_evidence():
    # fitting reads the screens once (EvidenceBuilder) and asks for many half-lives and row subsets
    # (whole stays): every answer must be build_evidence's on those rows, whatever was asked before
    from cpn.evidence import EvidenceBuilder
    from cpn.sampling import sample_screens
    from cpn.structure import build_expert_network

    net = build_expert_network("physionet", derived=True, measurement_age=True)
    info = network_info(net)
    s = sample_screens(net, 600, seed=4)
    stays = s["stay_id"].unique()
    rows = np.flatnonzero(s["stay_id"].isin(stays[::3]).to_numpy())
    b = EvidenceBuilder(s, info)
    assert any(info.roles[v] == "derived" and not np.isnan(det[0]).all()
               for v, det in b.evidence({}, details=True)[1].items())  # the trends are read
    sub = b.take(rows)
    for hl in ({"hr": 4.0}, {"hr": 0.5, "lact": 2.0}, {"hr": 4.0}, {}):
        for builder, frame in ((b, s), (sub, s.iloc[rows])):
            ev, det = builder.evidence(hl, details=True)
            ev_ref, det_ref = build_evidence(frame, info, hl, details=True)
            assert ev.keys() == ev_ref.keys() and det.keys() == det_ref.keys()
            for v in ev:
                np.testing.assert_array_equal(ev[v], ev_ref[v])
                for a, c in zip(det[v], det_ref[v]):
                    assert (a is None and c is None) or np.array_equal(a, c, equal_nan=True)
