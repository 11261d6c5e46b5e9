"""A batch scored in one model call gives each stay exactly what the model says about that stay alone,
on screens with a column for every concept (the engine's reference screens)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from sepsiscope.service.engine import _batch_tables
from sepsiscope.service.inputs import parse_body
from sepsiscope.service.views import VIEW_COLUMNS

from .conftest import bundle_24h

NOW = pd.Timestamp("2026-03-05")


def test_a_batch_equals_each_stay_scored_alone(engine):
    end = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.timezone.utc)
    bundles = [bundle_24h(end + dt.timedelta(hours=h), encounter_id=str(100 + h), shift=10.0 * h,
                          admit_hours_before=26 + 3 * h) for h in range(4)]
    items = [parse_body(b, now=NOW).stay_input for b in bundles]
    got = engine.score(items)
    model = engine.primary
    for i, (item, g) in enumerate(zip(items, got)):
        events, stays = _batch_tables([item])
        screens = engine.screens(events, stays, until_onset=False)  # every concept's column
        np.testing.assert_array_equal(g["risk"], model.risk(screens))
        np.testing.assert_array_equal(g["screen_time"], screens["screen_time"].to_numpy())
        # the last screen explained with its stay's earlier screens (the CPN's trend leaves read them)
        want = model.model.explain(model._inputs(screens), rows=[len(screens) - 1],
                                   model_name=model.name)[list(VIEW_COLUMNS)]
        pd.testing.assert_frame_equal(pd.DataFrame(g["explanation"]), want, check_exact=True)
