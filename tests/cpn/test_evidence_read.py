"""build_evidence reads the numeric columns as one block: the same evidence as reading each column
on its own, whatever the columns' dtypes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cpn.evidence import build_evidence, network_info


def _reference(screens, info, half_lives):
    """Each column read on its own (a frame of single-column blocks, all float)."""
    alone = pd.DataFrame({c: (screens[c].to_numpy(dtype=float) if c != "department" else screens[c].to_numpy())
                          for c in screens.columns if c not in ("screen_time", "sex")})
    return build_evidence(alone, info, half_lives, details=True)


def test_block_read_equals_column_reads(full_net, sampled_screens):
    from cpn.sampling import sample_screens

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
