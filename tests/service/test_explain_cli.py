"""``sepsiscope explain --run``: one stay read from the run's test screens, ``--at`` in hours or time."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from sepsiscope.cli import app
from sepsiscope.stay_screens import pick_screen, read_stay, write_stay_screens


@pytest.fixture(scope="module")
def run_dir(served):
    """The served fixture's folder is laid out like a run: models/, operating_points.json; add the screens."""
    from cpn import SepsisCPN

    run = served.cpn_dir.parent.parent
    columns = SepsisCPN.load(served.cpn_dir).required_columns
    write_stay_screens(served.screens, run / "test_screens.parquet", columns=columns)
    return run


def test_read_stay_reads_one_stay_through_a_filter(run_dir, served, monkeypatch):
    import pyarrow.parquet as pq

    stay = int(served.screens.stay_id.iloc[500])
    got = read_stay(run_dir / "test_screens.parquet", stay)
    want = served.screens[served.screens.stay_id == stay]
    assert got["screen_time"].tolist() == want["screen_time"].tolist()
    assert pq.ParquetFile(run_dir / "test_screens.parquet").metadata.num_row_groups >= 1
    seen = {}
    real = pd.read_parquet
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: (seen.update(k), real(*a, **k))[1])
    read_stay(run_dir / "test_screens.parquet", stay)
    assert seen["filters"] == [("stay_id", "==", stay)]


def test_explain_a_run_at_hours_since_admission(run_dir, served):
    stay = int(served.screens.stay_id.iloc[500])
    rows = served.screens[served.screens.stay_id == stay]
    hours = float(rows.hours_since_admit.iloc[2])
    res = CliRunner().invoke(app, ["explain", str(stay), "--run", str(run_dir), "--at", f"{hours:g}"])
    assert res.exit_code == 0, res.output
    assert f"screen {rows.screen_time.iloc[2]} ({hours:g} h since admission)" in res.output
    assert "in context" in res.output and "alone" in res.output and "prior log10 odds" in res.output
    assert f"threshold {served.threshold:.3f}" in res.output
    same = CliRunner().invoke(app, ["explain", str(stay), "--run", str(run_dir), "--at",
                                    str(rows.screen_time.iloc[2])])
    assert same.output == res.output


def test_explain_refuses_a_time_outside_the_stay_and_an_unknown_stay(run_dir, served):
    stay = int(served.screens.stay_id.iloc[500])
    res = CliRunner().invoke(app, ["explain", str(stay), "--run", str(run_dir), "--at", "100000"])
    assert res.exit_code != 0 and "is outside it" in res.output
    res = CliRunner().invoke(app, ["explain", "987654321", "--run", str(run_dir)])
    assert res.exit_code != 0 and "is not in" in res.output and "test split" in res.output


def test_pick_screen_before_the_first_screen():
    t0 = pd.Timestamp("2026-01-01")
    stay = pd.DataFrame({"stay_id": [1, 1], "screen_time": [t0 + pd.Timedelta(hours=h) for h in (3, 4)],
                         "hours_since_admit": [3.0, 4.0]})
    with pytest.raises(ValueError, match="from 3 h to 4 h after admission"):
        pick_screen(stay, "2")
    with pytest.raises(ValueError, match="is outside it"):
        pick_screen(stay, "2026-01-01 01:00")
    assert pick_screen(stay, "4.5").index.tolist() == [1]
