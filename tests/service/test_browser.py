"""The alarm-review page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

The test picks the cohort stay with the most alarms, clicks its first alarm on the risk trace and
checks the explanation the page shows against the models' own ``explain`` on the same screen
(built here from the cohort, not by the service). The screenshot is kept as a test artefact in
``test-artifacts/service/`` (or ``$SEPSISCOPE_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from .conftest import TOKEN
from .test_api import _stay_with_alarms

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("SEPSISCOPE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not CHROMIUM.exists():
        what = "the playwright package" if sync_playwright is None else str(CHROMIUM)
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is missing; .ci/run installs it")
        pytest.skip(f"{what} is missing (apt-get install -y chromium; pip install playwright)")
    return sync_playwright


def _fmt(x: float) -> str:
    return f"{x:.3f}".replace("-0.000", "0.000")


def test_click_an_alarm_and_read_its_explanation(live_server, served, engine, tmp_path):
    from cpn import SepsisCPN
    from gbdt import GBDTClassifier

    sync_playwright = _browser_or_skip()
    stay, alarms, _ = _stay_with_alarms(served, engine)
    first = alarms[alarms.fired].iloc[0]
    row = served.screens[(served.screens.stay_id == stay) & (served.screens.screen_time == first.screen_time)]
    cpn = SepsisCPN.load(served.cpn_dir)
    # the page explains the alarm's screen with its stay's history (the CPN's trend leaves read the
    # earlier screens), so the reference does too: the risk is the one that fired
    history = served.screens[served.screens.stay_id == stay].reset_index(drop=True)
    at = int(np.flatnonzero((history.screen_time == first.screen_time).to_numpy())[0])
    want = cpn.explain(history, rows=[at]).set_index("feature")
    risk = cpn.predict_proba(history)[at, 1]
    shap = GBDTClassifier.load(served.gbdt_dir).explain(row).set_index("feature")["contribution"]

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=str(CHROMIUM),
                                                       headless=True, args=FLAGS,
                                                       viewport={"width": 1600, "height": 1200})
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        outside = []
        page.on("request", lambda r: None if r.url.startswith(live_server) else outside.append(r.url))
        page.goto(f"{live_server}/#token={TOKEN}")
        page.fill("#stay-filter", str(stay))
        page.click(f"[data-testid=stay][data-stay='{stay}']")
        page.wait_for_selector("[data-testid=alarm]")
        assert page.locator("[data-testid=alarm]").count() == int(alarms.fired.sum())
        assert page.locator("[data-testid=silenced-alarm]").count() == int((~alarms.fired).sum())
        assert page.locator("[data-testid=silencing-window]").count() == int(alarms.fired.sum())
        page.locator("[data-testid=alarm]").first.click()
        page.wait_for_selector("[data-testid=bf-row]")

        shown = {}
        for r in page.locator("[data-testid=bf-row]").all():
            shown[r.get_attribute("data-feature")] = (r.locator("[data-testid=in-context]").inner_text(),
                                                      r.locator("[data-testid=alone]").inner_text(),
                                                      r.locator("[data-testid=weight]").inner_text())
        items = want.drop(index="total")
        assert set(shown) == set(items.index)
        for f, r in items.iterrows():
            assert shown[f][:2] == (_fmt(r.baseline), _fmt(r.contribution)), f
            assert shown[f][2] == f"{r.weight:.2f}", f
        total = want.loc["total", "contribution"]
        assert page.inner_text("[data-testid=bf-total]") == f"total log10 B(E) {_fmt(total)}"
        assert f"risk {risk:.3f}" in page.inner_text("[data-testid=bf-posterior]")
        assert f"against threshold {engine.threshold:.3f}: alarm" in page.inner_text("[data-testid=explain-summary]")
        shap_rows = page.locator("[data-testid=shap-row]").all()
        assert shap_rows
        for r in shap_rows:
            f = r.get_attribute("data-feature")
            assert r.locator("[data-testid=contribution]").inner_text() == _fmt(shap[f]), f
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "alarm_review.png"), full_page=True)
        context.close()
    assert not errors, errors
    assert not outside, outside  # the page fetches nothing from anywhere else
