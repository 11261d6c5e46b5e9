"""When things are measured, and what the measurement reads.

Measurement times come from renewal processes whose intensity follows the patient's state:
vital-sign rounds every ~4 h on the ward (more often as an early-warning proxy rises, hourly in
ICU), lab panels every 9-24 h (CRP/WBC daily-ish), blood gases and lactate mainly once infection
is suspected or organs fail (informative missingness), GCS mostly in ICU or when consciousness is
impaired. The process is simulated for all stays at once: a global cumulative intensity over the
hourly grid is inverted with ``np.interp`` at gamma-distributed increments (shape > 1 makes
intervals more regular than Poisson).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ehr.synthetic.physiology import acvpu_from_gcs, trends
from ehr.synthetic.plan import SITES, Site

__all__ = ["Grid", "make_grid", "renewal_times", "measure"]

#: probability that a vital-sign round charts each item, per department (ward, surgical, ICU, ED)
_VITAL_P = {
    "hr": (0.98, 0.98, 0.99, 0.98), "bp": (0.93, 0.93, 0.97, 0.93), "map": (0.55, 0.55, 0.95, 0.55),
    "resp": (0.85, 0.85, 0.93, 0.90), "spo2": (0.95, 0.95, 0.97, 0.95),
    "temp": (0.70, 0.70, 0.35, 0.75), "on_o2": (0.90, 0.90, 0.60, 0.90),
    "acvpu": (0.85, 0.85, 0.05, 0.85),
}

#: measurement noise: (multiplicative?, sd, decimals)
_NOISE = {
    "hr": (False, 3.0, 0), "sbp": (False, 6.0, 0), "dbp": (False, 4.0, 0), "map": (False, 1.5, 0),
    "resp": (False, 1.5, 0), "spo2": (False, 1.0, 0), "temp": (False, 0.15, 1),
    "gcs": (False, 0.25, 0), "crp": (True, 0.12, 1), "wbc": (True, 0.08, 1), "plt": (True, 0.06, 0),
    "bili": (True, 0.10, 1), "crea": (True, 0.06, 2), "bun": (True, 0.08, 0), "alb": (False, 0.15, 1),
    "lact": (True, 0.12, 1), "hco3": (False, 1.2, 0), "ph": (False, 0.015, 2),
    "glucose": (True, 0.12, 0), "hgb": (False, 0.3, 1),
    "on_o2": (False, 0.0, 0), "o2_flow": (False, 0.0, 0), "fio2": (False, 0.0, 2), "acvpu": (False, 0.0, 0),
}


@dataclass(frozen=True)
class Grid:
    """The hourly grid of all stays: row r covers hours [h, h + dt) of stay ``stay``."""

    stay: np.ndarray
    h: np.ndarray
    dt: np.ndarray
    t_offset: np.ndarray  # per stay: start of the stay on the global time axis
    los_h: np.ndarray


def make_grid(los_h: np.ndarray) -> Grid:
    """Hourly rows [0, 1), [1, 2), ... up to each stay's length of stay (last row partial)."""
    n_rows = np.ceil(los_h).astype(np.int64)
    stay = np.repeat(np.arange(len(los_h)), n_rows)
    first = np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
    h = (np.arange(stay.size) - first).astype("float64")
    dt = np.minimum(1.0, los_h[stay] - h)
    return Grid(stay, h, dt, np.cumsum(los_h) - los_h, los_h)


def renewal_times(grid: Grid, rate: np.ndarray, rng: np.random.Generator, *, shape: float,
                  first_scale: float = 1.0):
    """Event times of a renewal process with time-varying ``rate`` (events/hour per grid row).

    Returns ``(stay_index, t_hours)``, sorted by stay then time, every t in [0, los).
    """
    rate = np.maximum(rate, 1e-6)
    g_end = np.cumsum(rate * grid.dt)
    g_knots = np.concatenate([[0.0], g_end])
    t_knots = np.concatenate([[0.0], np.cumsum(grid.dt)])
    n = len(grid.los_h)
    n_rows = np.bincount(grid.stay, minlength=n)
    row_end = np.cumsum(n_rows)
    g0 = g_knots[row_end - n_rows]
    lam = g_knots[row_end] - g0
    m = np.ceil(lam + 5.0 * np.sqrt(lam) + 5.0).astype(np.int64)
    seg = np.repeat(np.arange(n), m)
    inc = rng.gamma(shape, 1.0 / shape, seg.size)
    starts = np.cumsum(m) - m
    inc[starts] = rng.uniform(0.0, first_scale, n)
    cs = np.cumsum(inc)
    local = cs - (cs[starts] - inc[starts])[seg]
    keep = local < lam[seg]
    seg, local = seg[keep], local[keep]
    t = np.interp(g0[seg] + local, g_knots, t_knots) - grid.t_offset[seg]
    t = np.clip(t, 0.0, grid.los_h[seg] - 1e-6)
    return seg, t


def _news_proxy(x):
    # an early-warning proxy on the latent trend, only to drive observation frequency
    s = (np.select([x["resp"] <= 8, x["resp"] >= 25, x["resp"] >= 21, x["resp"] <= 11], [3, 3, 2, 1], 0)
         + np.select([x["spo2"] <= 91, x["spo2"] <= 93, x["spo2"] <= 95], [3, 2, 1], 0)
         + 2 * (x["on_o2"] > 0.5)
         + np.select([x["sbp"] <= 90, x["sbp"] <= 100, x["sbp"] <= 110, x["sbp"] >= 220], [3, 2, 1, 3], 0)
         + np.select([x["hr"] <= 40, x["hr"] >= 131, x["hr"] >= 111, x["hr"] <= 50, x["hr"] >= 91],
                     [3, 3, 2, 1, 1], 0)
         + 3 * (np.round(x["gcs"]) < 15)
         + np.select([x["temp"] <= 35.0, x["temp"] >= 39.1, x["temp"] <= 36.0, x["temp"] >= 38.1],
                     [3, 2, 1, 1], 0))
    return s


def _rates(grid: Grid, P, site: Site):
    t = grid.h + 0.5 * grid.dt
    i = grid.stay
    x = trends(t, i, P, wander=False)
    news = _news_proxy(x)
    dept = P["dept"][i]  # 0 ward, 1 surgical ward, 2 ICU, 3 ED (plan.DEPARTMENTS)
    icu = dept == 2
    vit = np.array(site.vital_rate)[dept]
    vit = np.where(icu, vit, np.select([news >= 7, news >= 5, news == 0], [1.0, 1 / 1.5, 1 / 5.0], vit))
    vit = np.where(x["postop"] > 0.65, np.maximum(vit, 1.0), vit)
    susp = t >= P["suspicion_h"][i]
    work_up = susp & (t < P["suspicion_h"][i] + 48.0)
    lab = np.array(site.lab_rate)[dept] * (1.0 + 0.8 * (news >= 5) + 1.0 * x["dysfunction"] + 0.6 * work_up)
    gas = (np.array(site.gas_rate)[dept] + 0.03 * P["copd"][i]
           + 0.06 * susp * np.maximum(x["infection"], x["dysfunction"])
           + 0.12 * x["dysfunction"] + 0.03 * (news >= 7))
    gcs = np.where(icu, 0.25, np.where(dept == 3, 0.10, 0.04 + 0.25 * (x["gcs"] < 14.5)))
    return {"vitals": vit, "labs": lab, "gas": gas, "gcs": gcs}


class _Sink:
    """Collects (stay, minute, concept, value) columns from the measurement groups."""

    def __init__(self, concepts: list[str]):
        self.index = {c: k for k, c in enumerate(concepts)}
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, concept, stay, minute, value, mask=None):
        if mask is not None:
            stay, minute, value = stay[mask], minute[mask], value[mask]
        self.parts.append((stay, minute, np.full(stay.size, self.index[concept], np.int16),
                           np.asarray(value, dtype="float64")))

    def arrays(self):
        cols = list(zip(*self.parts))
        return tuple(np.concatenate(c) for c in cols)


def _finish(concept, v, rng, limits):
    mult, sd, dec = _NOISE[concept]
    if sd > 0:
        v = v * np.exp(rng.normal(0.0, sd, v.size)) if mult else v + rng.normal(0.0, sd, v.size)
    lo, hi = limits[concept]
    return np.clip(np.round(v, dec), lo, hi)


def measure(P, grid: Grid, rng: np.random.Generator, concepts: list[str], limits: dict,
            site: Site = SITES["A"]):
    """Simulate every measurement of every stay.

    Returns ``(stay_index, minute_since_admit, concept_index, value)`` arrays (unsorted); the
    concept index refers to ``concepts``; ``limits`` maps concept -> (min, max); ``site`` sets
    the base observation rates.
    """
    sink = _Sink(concepts)
    rates = _rates(grid, P, site)

    def times(kind, shape, first):
        i, t = renewal_times(grid, rates[kind], rng, shape=shape, first_scale=first)
        minute = np.floor(t * 60.0).astype(np.int64)
        return i, minute, minute / 60.0 + rng.uniform(0, 1 / 60.0, minute.size)

    # vital-sign rounds
    i, minute, t = times("vitals", 4.0, 0.3)
    x = trends(t, i, P)
    dept = P["dept"][i]
    p = {k: np.asarray(v)[dept] for k, v in _VITAL_P.items()}
    u = rng.random((8, i.size))
    sink.add("hr", i, minute, _finish("hr", x["hr"], rng, limits), u[0] < p["hr"])
    bp = u[1] < p["bp"]
    sbp = _finish("sbp", x["sbp"], rng, limits)
    dbp = np.minimum(_finish("dbp", x["dbp"], rng, limits), sbp - 10.0)
    dbp = np.clip(dbp, *limits["dbp"])
    sink.add("sbp", i, minute, sbp, bp)
    sink.add("dbp", i, minute, dbp, bp)
    # MAP as the monitor reports it: from the measured pressures (arterial line in ICU)
    sink.add("map", i, minute, _finish("map", (sbp + 2.0 * dbp) / 3.0, rng, limits), bp & (u[2] < p["map"]))
    sink.add("resp", i, minute, _finish("resp", x["resp"], rng, limits), u[3] < p["resp"])
    sink.add("spo2", i, minute, _finish("spo2", x["spo2"], rng, limits), u[4] < p["spo2"])
    sink.add("temp", i, minute, _finish("temp", x["temp"], rng, limits), u[5] < p["temp"])
    acvpu = acvpu_from_gcs(np.round(x["gcs"] + rng.normal(0.0, 0.2, i.size)))
    sink.add("acvpu", i, minute, acvpu, u[6] < p["acvpu"])
    o2 = u[7] < p["on_o2"]
    oi, om, on = i[o2], minute[o2], x["on_o2"][o2]
    sink.add("on_o2", oi, om, on)
    # flow and FiO2 charted while on oxygen, and once (0 L/min, 0.21) when weaned, so the
    # last value carried forward always agrees with on_o2
    prev_on = np.concatenate([[0.0], on[:-1]])
    same = np.concatenate([[False], oi[1:] == oi[:-1]])
    chart = (on > 0.5) | (same & (prev_on > 0.5))
    sink.add("o2_flow", oi, om, _finish("o2_flow", x["o2_flow"][o2], rng, limits), chart)
    sink.add("fio2", oi, om, _finish("fio2", x["fio2"][o2], rng, limits), chart)

    # lab panels (results become available at these times)
    i, minute, t = times("labs", 3.0, 0.3)
    x = trends(t, i, P)
    icu = P["dept"][i] == 2
    u = rng.random((11, i.size))
    liver_sick = (P["a_liver"][i] > 0) & (x["dysfunction"] > 0.1)
    panel_p = {"crea": 0.97, "bun": 0.95, "plt": 0.96, "wbc": 0.97, "hgb": 0.96, "glucose": 0.9,
               "hco3": 0.6, "crp": np.where(icu, 0.55, 0.8), "bili": 0.3 + 0.5 * liver_sick,
               "alb": 0.25, "lact": np.where(icu, 0.15, 0.05)}
    for k, (c, pc) in enumerate(panel_p.items()):
        sink.add(c, i, minute, _finish(c, x[c], rng, limits), u[k] < pc)

    # blood gases (with lactate and the FiO2 at the time of sampling)
    i, minute, t = times("gas", 1.5, 1.0)
    x = trends(t, i, P)
    u = rng.random((3, i.size))
    sink.add("ph", i, minute, _finish("ph", x["ph"], rng, limits))
    sink.add("hco3", i, minute, _finish("hco3", x["hco3"], rng, limits), u[0] < 0.95)
    sink.add("lact", i, minute, _finish("lact", x["lact"], rng, limits), u[1] < 0.97)
    sink.add("fio2", i, minute, _finish("fio2", x["fio2"], rng, limits))

    # GCS assessments
    i, minute, t = times("gcs", 3.0, 0.5)
    x = trends(t, i, P)
    sink.add("gcs", i, minute, _finish("gcs", x["gcs"], rng, limits))
    return sink.arrays()
