"""The one home of patient-grouped splitting: every screen, image or stay of a group stays together.

``split_patients``   train / dev / test of a stays table, by patient, stratified by sepsis
``holdout_groups``   one held-out part of rows by group (early stopping, half-life selection, validation)
``group_kfold``      K folds of rows by group (cross-validation, grid search, out-of-fold predictions)

Groups are patients (``subject_id``) wherever a table has them: two stays of one patient in
different parts would leak.

Examples
--------
>>> import numpy as np, pandas as pd
>>> stays = pd.DataFrame({"subject_id": range(100), "stay_id": range(100), "sepsis": [i < 10 for i in range(100)]})
>>> split = split_patients(stays, seed=0)
>>> split.value_counts().sort_index().to_dict()
{'dev': 20, 'test': 24, 'train': 56}
>>> groups = np.repeat(np.arange(10), 3)
>>> tr, va = holdout_groups(groups, 0.2, random_state=0)
>>> len(va), set(groups[tr]) & set(groups[va])
(6, set())
>>> [len(te) for _, te in group_kfold(groups, 5, random_state=0)]
[6, 6, 6, 6, 6]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["split_patients", "holdout_groups", "held_out_groups", "group_kfold"]


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


def holdout_groups(groups, fraction: float, *, y=None, random_state=0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, held_out)`` with about ``fraction`` of the groups held out.

    With ``y`` (0/1 per row), groups are stratified by whether they hold a positive row, so both
    parts keep positives when positives are rare (falls back to an unstratified draw when a
    stratum has fewer than two groups). At least one group lands on each side.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1); got {fraction}")
    groups = np.asarray(groups)
    uniq, inv = np.unique(groups, return_inverse=True)
    if len(uniq) < 2:
        raise ValueError(f"need at least two groups to hold one out; got {len(uniq)}")
    has_pos = None
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(groups):
            raise ValueError(f"y has {len(y)} rows but groups has {len(groups)}")
        has_pos = np.bincount(inv, weights=y, minlength=len(uniq)) > 0
    is_held = np.isin(inv, held_out_groups(len(uniq), fraction, has_pos=has_pos, random_state=random_state))
    return np.flatnonzero(~is_held), np.flatnonzero(is_held)


def held_out_groups(n_groups: int, fraction: float, *, has_pos=None, random_state=0) -> np.ndarray:
    """Positions (in sorted group order) of the groups :func:`holdout_groups` holds out.

    Takes only the number of groups and, per sorted group, whether it holds a positive row, so a
    caller whose rows are spread over partitions draws the same groups from per-group summaries.

    >>> held_out_groups(10, 0.2, random_state=0).tolist()
    [2, 8]
    """
    from sklearn.model_selection import train_test_split

    strata = None
    if has_pos is not None:
        has_pos = np.asarray(has_pos, dtype=bool)
        strata = has_pos if min(has_pos.sum(), (~has_pos).sum()) >= 2 else None
    # ceil, as scikit-learn rounds a fractional test_size
    n_held = min(max(int(np.ceil(fraction * n_groups)), 1), n_groups - 1)
    try:
        _, held = train_test_split(np.arange(n_groups), test_size=n_held, random_state=random_state,
                                   stratify=strata)
    except ValueError:  # too few groups of a stratum for a stratified draw
        _, held = train_test_split(np.arange(n_groups), test_size=n_held, random_state=random_state)
    return np.sort(held)


def group_kfold(groups, n_splits: int, *, random_state=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_splits`` (train, test) row-index pairs; each group lands in exactly one test fold.

    ``random_state=None`` keeps scikit-learn's deterministic balanced assignment; an integer
    shuffles the groups first.
    """
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if not 2 <= n_splits <= n_groups:
        raise ValueError(f"n_splits must be between 2 and the number of groups ({n_groups}), got {n_splits}")
    cv = GroupKFold(n_splits=n_splits) if random_state is None else \
        GroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    return list(cv.split(np.zeros(len(groups)), groups=groups))
