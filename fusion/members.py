"""Member predictions side by side: the long ``predictions`` table turned into one row per screen.

A stack reads its members' outputs as columns ``risk_<member>`` of a *member table* (one row per
screen, keyed by ``stay_id, screen_time``). :func:`member_frame` builds it from a contract
``predictions`` table and refuses to guess: a member that is missing or members scored on
different screens is an error that names the member, how many screens and the first one. Only members listed as
``optional`` (NEWS2, which needs an observation in the hour) may lack a screen; they are then
missing there (``NaN``), never dropped or filled in silently.

Examples
--------
>>> import pandas as pd
>>> t = pd.to_datetime(["2020-01-01 01:00", "2020-01-01 02:00"])
>>> p = pd.DataFrame({"stay_id": [1, 1, 1, 1, 1], "screen_time": [t[0], t[1], t[0], t[1], t[1]],
...                   "model": ["cpn", "cpn", "lightgbm", "lightgbm", "news2"],
...                   "risk": [0.1, 0.2, 0.3, 0.4, 5.0], "fold": [0, 0, 0, 0, None], "split": "train"})
>>> member_frame(p, optional=["news2"])[["risk_cpn", "risk_lightgbm", "risk_news2"]].to_numpy().tolist()
[[0.1, 0.3, nan], [0.2, 0.4, 5.0]]
>>> member_frame(p.iloc[:3])
Traceback (most recent call last):
...
ehr.schema.SchemaError: predictions: member 'lightgbm' has no prediction for 1 of 2 screens (first: stay 1 at 2020-01-01 02:00:00); members must be scored on the same screens
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr.schema import SchemaError, validate

__all__ = ["MEMBER_PREFIX", "member_column", "member_names", "member_frame", "require_out_of_fold"]

#: a member's risk is the column ``risk_<member>`` of a member table
MEMBER_PREFIX = "risk_"
_KEYS = ["stay_id", "screen_time"]
#: screen columns carried into a member table when a screens table is given
_CARRIED = ("subject_id", "onset_in_h", "label", "split")


def member_column(member: str) -> str:
    """``risk_<member>``: where a member's risk lives in a member table."""
    return MEMBER_PREFIX + member


def member_names(columns) -> list[str]:
    """The members of a member table, from its ``risk_*`` columns, in column order."""
    return [c[len(MEMBER_PREFIX):] for c in columns if str(c).startswith(MEMBER_PREFIX)]


def _key_index(frame: pd.DataFrame) -> pd.MultiIndex:
    times = pd.to_datetime(frame["screen_time"]).to_numpy().astype("datetime64[ns]")
    return pd.MultiIndex.from_arrays([frame["stay_id"].to_numpy(dtype="int64"), times], names=_KEYS)


def _first(index: pd.MultiIndex, rows) -> str:
    stay, time = index[int(np.flatnonzero(rows)[0])]
    return f"stay {stay} at {pd.Timestamp(time)}"


def member_frame(predictions: pd.DataFrame, screens: pd.DataFrame | None = None, *, members=None,
                 optional=(), split: str | None = None, subset: bool = False) -> pd.DataFrame:
    """One row per screen and one ``risk_<member>`` column per member.

    Parameters
    ----------
    predictions : DataFrame
        Contract ``predictions`` (long: one row per model and screen).
    screens : DataFrame, optional
        The screens to combine, in this order (its ``subject_id``, ``onset_in_h``, ``label`` and
        ``split`` columns are carried over). Default: the screens the required members scored.
    members : list of str, optional
        Members to read (default: every model in ``predictions``); each must be present.
    optional : list of str
        Members that may lack some screens (their risk is then ``NaN``).
    split : str, optional
        Read only the prediction rows of this split.
    subset : bool, default False
        ``screens`` is a selection of the predicted screens (e.g. the alarms to explain):
        predictions at other screens are ignored instead of being an error.

    Raises
    ------
    SchemaError
        A member absent, without a prediction for a screen (unless optional), or with
        predictions on screens that are not among the screens to combine.
    ValueError
        Duplicate screens (two predictions of one member for one screen already fail the
        ``predictions`` contract).
    """
    validate(predictions, "predictions")
    where = "predictions" if split is None else f"predictions (split {split!r})"
    p = predictions if split is None else predictions[predictions["split"] == split]
    present = list(dict.fromkeys(p["model"]))
    members = present if members is None else list(dict.fromkeys(members))
    absent = [m for m in members if m not in present]
    if absent or not members:
        raise SchemaError(f"{where}: no predictions of member(s) {', '.join(map(repr, absent)) or '(none given)'}; "
                          f"the table has {', '.join(present) or 'no rows'}")
    optional = set(optional)
    by_member = {m: g for m, g in p[p["model"].isin(members)].groupby("model", sort=False)}
    if screens is not None:
        keys = screens.reset_index(drop=True)
    else:
        required = [m for m in members if m not in optional] or members
        keys = pd.concat([by_member[m][_KEYS] for m in required]).drop_duplicates(ignore_index=True)
    index = _key_index(keys)
    if index.has_duplicates:
        raise ValueError(f"screens: {int(index.duplicated().sum())} duplicate (stay_id, screen_time) row(s) "
                         f"(first: {_first(index, index.duplicated())})")
    out = keys[[c for c in _KEYS + list(_CARRIED) if c in keys.columns]].copy()
    for m in members:
        g = by_member[m]
        got = _key_index(g)   # unique: the contract keys predictions by (stay_id, screen_time, model)
        at = index.get_indexer(got)
        if subset:
            g, at = g[at >= 0], at[at >= 0]
        if (at < 0).any():
            raise SchemaError(f"{where}: member {m!r} scored {int((at < 0).sum())} screen(s) that are not among "
                              f"the {len(index):,} screens to combine (first: {_first(got, at < 0)}); "
                              "members must be scored on the same screens")
        risk = np.full(len(index), np.nan)
        risk[at] = g["risk"].to_numpy(dtype="float64")
        if m not in optional and len(at) < len(index):
            hit = np.zeros(len(index), bool)
            hit[at] = True
            raise SchemaError(f"{where}: member {m!r} has no prediction for {len(index) - len(at):,} of "
                              f"{len(index):,} screens (first: {_first(index, ~hit)}); members must be "
                              "scored on the same screens")
        out[member_column(m)] = risk
    return out


def require_out_of_fold(predictions: pd.DataFrame, members, *, split: str | None = None, exempt=()) -> None:
    """Raise unless every member outside ``exempt`` carries a ``fold`` on each of its rows.

    A meta-learner fitted on in-sample predictions trusts whichever member overfits most; only
    out-of-fold predictions (:func:`fusion.oof.oof_predictions`) are fit for fitting it.
    Unfitted scores (NEWS2) have no fold and are listed in ``exempt``.
    """
    p = predictions if split is None else predictions[predictions["split"] == split]
    for m in members:
        if m in exempt:
            continue
        no_fold = p.loc[p["model"] == m, "fold"].isna()
        if no_fold.any():
            raise ValueError(f"predictions{'' if split is None else f' (split {split!r})'}: member {m!r} has "
                             f"{int(no_fold.sum()):,} prediction(s) without a fold: not out-of-fold. Fit the "
                             "stack on out-of-fold predictions (`sepsiscope predict --oof K`, "
                             "fusion.oof.oof_predictions)")
