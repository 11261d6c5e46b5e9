"""Cohort flow: where every stay read goes, from the reader to the evaluated split.

:func:`cohort_flow` returns the table ``stage, n_stays, n_septic, reason`` that the main job
writes as ``cohort_flow.csv`` and the report shows. Stages, in order (each counts stays; septic =
``stays.sepsis``):

* the reader's own stages when it records them (``reader_stages``: rows of the same shape, e.g.
  files read and rejected; see ``ingest_report.json``),
* ``read``: every stay of the cohort,
* ``excluded`` (one row per reason, e.g. ``--exclusions johnson2018``, :mod:`ehr.exclusions`),
* ``no hourly screen``: no screen row at all (no measurement during the stay),
* ``onset before the first screen``: septic stays whose every screen is at or after onset; they
  cannot be warned and leave the screening population (on the MIMIC-III demo most dropped stays
  are these),
* ``screened``: stays with at least one screen before onset (the evaluation population),
* ``septic, no new-data screen before onset``: screened septic stays that the protocol cannot
  warn (no screen with new data before onset); they stay in the population but not in the
  sensitivity denominators,
* ``split: train / dev / test / external``: the screened stays of each split.

Examples
--------
>>> import pandas as pd
>>> T = pd.Timestamp("2020-01-01")
>>> stays = pd.DataFrame({"stay_id": [1, 2, 3, 4], "sepsis": [True, True, False, False]})
>>> rows = pd.DataFrame({"stay_id": [1, 1, 2, 3], "screen_time": [T] * 4, "new_data": True,
...                      "onset_in_h": [5.0, 4.0, -1.0, None]})
>>> cohort_flow(stays, rows)[["stage", "n_stays", "n_septic"]].values.tolist()
[['read', 4, 2], ['no hourly screen', 1, 0], ['onset before the first screen', 1, 1], ['screened', 2, 1]]
"""

from __future__ import annotations

import pandas as pd

from ehr.schema import require_columns

__all__ = ["FLOW_COLUMNS", "cohort_flow", "add_flows"]

#: columns of the cohort-flow table (``cohort_flow.csv``)
FLOW_COLUMNS = ("stage", "n_stays", "n_septic", "reason")


def _septic(stays: pd.DataFrame) -> pd.Series:
    if "sepsis" in stays.columns:
        return stays["sepsis"].fillna(False).astype(bool)
    return stays["onset_time"].notna()


def cohort_flow(stays: pd.DataFrame, rows: pd.DataFrame, *, excluded: pd.Series | None = None,
                split: pd.Series | None = None, reader_stages=None, with_events=None) -> pd.DataFrame:
    """The cohort-flow table of one source.

    Parameters
    ----------
    stays : DataFrame
        Every stay the reader returned (before exclusions), with ``stay_id`` and ``sepsis``.
    rows : DataFrame
        Hourly screen rows of the kept stays, including those at or after onset
        (``build_screens(..., until_onset=False)``): ``stay_id``, ``onset_in_h``, ``new_data``.
    excluded : Series, optional
        Exclusion reason by ``stay_id`` (``None`` = kept), from :func:`ehr.exclusions.apply_exclusions`.
    split : Series, optional
        Split by ``stay_id`` (``train``/``dev``/``test``/``external``).
    reader_stages : list of dict, optional
        The reader's stages (``stage, n_stays, n_septic, reason``), put first.
    with_events : array-like, optional
        Stay ids that had events. For screens built ``until_onset`` (no row at or after onset), a
        stay with events but no row is one whose onset came at or before its first screen, not
        one without measurements.

    Returns
    -------
    DataFrame
        :data:`FLOW_COLUMNS` (``n_septic`` nullable: a reader stage may not know it); stages
        without stays are left out, except ``read`` and ``screened``.
    """
    require_columns(stays, ["stay_id"], table="stays", purpose="for the cohort flow")
    require_columns(rows, ["stay_id", "onset_in_h"], table="screens", purpose="for the cohort flow")
    septic = pd.Series(_septic(stays).to_numpy(), index=stays["stay_id"].to_numpy())
    out = [dict(r) for r in (reader_stages or [])]

    def add(stage, ids, reason="", keep_empty=False):
        ids = pd.Index(ids)
        if len(ids) or keep_empty:
            out.append({"stage": stage, "n_stays": int(len(ids)), "n_septic": int(septic.reindex(ids).sum()),
                        "reason": reason})

    add("read", septic.index, keep_empty=True)
    kept = septic.index
    if excluded is not None:
        reasons = excluded.reindex(septic.index)
        order = reasons.cat.categories if isinstance(reasons.dtype, pd.CategoricalDtype) else dict.fromkeys(
            reasons.dropna())
        for reason in order:
            add("excluded", reasons.index[(reasons == reason).to_numpy()], reason)
        kept = reasons.index[reasons.isna().to_numpy()]
    with_rows = pd.Index(rows["stay_id"].unique() if with_events is None else pd.unique(pd.Series(with_events)))
    add("no hourly screen", kept.difference(with_rows), "no measurement during the stay")
    before = ~(rows["onset_in_h"].to_numpy(dtype="float64") <= 0)  # NaN (no onset) is before
    screened = pd.Index(rows.loc[before, "stay_id"].unique()).intersection(kept)
    add("onset before the first screen", kept.intersection(with_rows).difference(screened),
        "onset precedes every hourly screen: no model can warn; not screened")
    add("screened", screened, "at least one screen before onset: the evaluation population", keep_empty=True)
    if "new_data" in rows.columns:
        new = before & rows["new_data"].astype("boolean").fillna(False).to_numpy(bool)
        warnable = pd.Index(rows.loc[new, "stay_id"].unique())
        lost = screened[septic.reindex(screened).to_numpy()].difference(warnable)
        add("septic, no new-data screen before onset", lost,
            "in the population, not in the sensitivity denominators (the protocol screens new data only)")
    if split is not None:
        sp = split.reindex(screened)
        for name in ("train", "dev", "test", "external"):
            add(f"split: {name}", sp.index[(sp == name).to_numpy()])
    table = pd.DataFrame(out, columns=list(FLOW_COLUMNS))
    table["n_stays"] = table["n_stays"].astype("int64")
    # a reader may not know how many of what it dropped were septic
    table["n_septic"] = pd.array([None if pd.isna(v) else int(v) for v in table["n_septic"]], dtype="Int64")
    table["reason"] = table["reason"].fillna("").astype(str)
    return table


#: the order of the stages after the reader's own (``excluded`` rows keep their reasons' order)
_STAGE_ORDER = ("read", "excluded", "no hourly screen", "onset before the first screen", "screened",
                "septic, no new-data screen before onset", "split: train", "split: dev", "split: test",
                "split: external")


def add_flows(tables) -> pd.DataFrame:
    """The cohort flow of disjoint sets of stays (the parts of a partitioned cohort), added up.

    Each table is :func:`cohort_flow` of some stays; rows of one ``(stage, reason)`` are summed
    (a part leaves out a stage none of its stays reached), and the stages come in
    :func:`cohort_flow`'s order. ``n_septic`` stays missing when a part does not know it.

    Examples
    --------
    >>> import pandas as pd
    >>> T = pd.Timestamp("2020-01-01")
    >>> stays = pd.DataFrame({"stay_id": [1, 2, 3, 4], "sepsis": [True, True, False, False]})
    >>> rows = pd.DataFrame({"stay_id": [1, 1, 2, 3], "screen_time": [T] * 4, "new_data": True,
    ...                      "onset_in_h": [5.0, 4.0, -1.0, None]})
    >>> parts = [cohort_flow(stays[stays.stay_id.isin(ids)], rows[rows.stay_id.isin(ids)]) for ids in ([1, 4], [2, 3])]
    >>> add_flows(parts).equals(cohort_flow(stays, rows))
    True
    """
    tables = [t for t in tables if t is not None]
    if not tables:
        return pd.DataFrame(columns=list(FLOW_COLUMNS))
    cat = pd.concat(tables, ignore_index=True)
    known = {s: i for i, s in enumerate(_STAGE_ORDER)}
    # reader stages (not in the list) first, in the order met
    rank = cat["stage"].map(lambda s: known.get(s, -1)).to_numpy()
    first = {key: i for i, key in reversed(list(enumerate(zip(cat["stage"], cat["reason"]))))}
    cat = cat.assign(_rank=rank, _first=[first[k] for k in zip(cat["stage"], cat["reason"])])
    out = (cat.groupby(["_rank", "_first", "stage", "reason"], sort=True, dropna=False)
           .agg(n_stays=("n_stays", "sum"), n_septic=("n_septic", lambda v: v.sum() if v.notna().all() else pd.NA))
           .reset_index())
    table = out[list(FLOW_COLUMNS)].reset_index(drop=True)
    table["n_stays"] = table["n_stays"].astype("int64")
    table["n_septic"] = pd.array([None if pd.isna(v) else int(v) for v in table["n_septic"]], dtype="Int64")
    return table
