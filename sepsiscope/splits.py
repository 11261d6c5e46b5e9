"""Seeded patient-level splits: every screen of a patient lands in the same split.

Examples
--------
>>> import pandas as pd
>>> stays = pd.DataFrame({"subject_id": range(100), "stay_id": range(100), "sepsis": [i < 10 for i in range(100)]})
>>> split = split_patients(stays, seed=0)
>>> split.value_counts().sort_index().to_dict()
{'dev': 20, 'test': 24, 'train': 56}
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["split_patients"]


def split_patients(stays: pd.DataFrame, *, seed: int = 0, dev_fraction: float = 0.2,
                   test_fraction: float = 0.25) -> pd.Series:
    """Assign each stay to ``train``, ``dev`` or ``test`` by patient, stratified by sepsis.

    Returns a Series indexed by ``stay_id``. A patient with any septic stay counts as septic for
    stratification, so the (rare) positives spread evenly over the splits.
    """
    if not 0 <= dev_fraction < 1 or not 0 < test_fraction < 1 or dev_fraction + test_fraction >= 1:
        raise ValueError("need 0 <= dev_fraction, 0 < test_fraction and dev + test < 1")
    rng = np.random.default_rng(seed)
    subj = stays.groupby("subject_id")["sepsis"].any()
    label = pd.Series(index=subj.index, dtype=object)
    for septic in (True, False):
        ids = subj.index[subj.to_numpy() == septic].to_numpy()
        ids = ids[rng.permutation(len(ids))]
        n_test = int(round(test_fraction * len(ids)))
        n_dev = int(round(dev_fraction * len(ids)))
        label[ids[:n_test]] = "test"
        label[ids[n_test:n_test + n_dev]] = "dev"
        label[ids[n_test + n_dev:]] = "train"
    out = pd.Series(label.reindex(stays["subject_id"]).to_numpy(), index=stays["stay_id"].to_numpy(), name="split")
    out.index.name = "stay_id"
    return out
