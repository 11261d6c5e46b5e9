"""Load on the scoring service: concurrent clients post 24-hour FHIR bundles over loopback.

Usage::

    python benchmarks/service_load.py [--run RUN] [--clients 8] [--requests 3000] [--duration 30]
                                      [--mode sliding|fresh] [--server-cpus 0]

Starts ``sepsiscope serve`` (one uvicorn worker) on 127.0.0.1 at a free port, with the run's
models (default: a small CPN and LightGBM fitted here on 300 synthetic stays; the CPN scores and
explains, and the LightGBM is only loaded beside it). Each client is one keep-alive connection
that posts one stay's last 24 hours (5 vitals hourly and 2 labs: 122 Observations, 45 kB) and
waits for the answer before posting again. ``--mode sliding``: each client's patient moves on one
hour per request, so 23 of the 24 hours were posted before (a ward system re-posting every hour);
``--mode fresh``: every request holds observations never seen before (no validation is cached).
Stops after ``--requests`` answers or ``--duration`` seconds, whichever comes first.

Prints throughput, p50/p90/p99 latency, the server's CPU time per request (less sensitive to
other load than wall time), the same for ``GET /healthz`` (the HTTP stack alone: the reference
measured in this run), and the load average before and after. The client is a minimal asyncio
HTTP/1.1 client so that it takes as little of the machine as it can; it runs on the same machine.
``--server-cpus 0`` pins the server to CPU 0 (``taskset``) and the clients to the others.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VITALS = (("8867-4", 88.0, "/min"), ("8480-6", 118.0, "mm[Hg]"), ("9279-1", 18.0, "/min"),
          ("59408-5", 96.0, "%"), ("8310-5", 37.4, "Cel"))
LABS = (("2524-7", 1.6, "mmol/L"), ("2160-0", 1.1, "mg/dL"))


def fit_models(out: Path) -> Path:
    """A run-like directory with a small CPN and LightGBM and an operating point."""
    from cpn import SepsisCPN
    from ehr.screens import build_screens
    from ehr.synthetic import generate_cohort
    from gbdt import GBDTClassifier

    c = generate_cohort(300, seed=1)
    screens = build_screens(c.events, c.stays, c.cxr)
    cpn = SepsisCPN("full", half_lives="prior", max_iter=8, max_rows=None).fit(screens)
    cpn.save(out / "models" / "cpn")
    GBDTClassifier(n_estimators=60, early_stopping_rounds=None).fit(screens).save(out / "models" / "gbdt")
    risk = cpn.predict_proba(screens)[:, 1]
    ops = [{"model": "cpn", "operating_point": "news2>=5", "threshold": float(np.quantile(risk, 0.9))}]
    (out / "operating_points.json").write_text(json.dumps(ops))
    from sepsiscope.runinfo import write_run_json  # a run directory is one whose run.json says complete

    write_run_json(out, {"benchmark": "service_load"}, seeds={"cohort": 1}, extra={"complete": True})
    return out


class Patient:
    """One client's stay: hourly observations, pre-serialised, and its 24-hour windows as request bodies."""

    def __init__(self, index: int, start: dt.datetime, fresh: bool, rng: np.random.Generator):
        self.index, self.start, self.fresh, self.rng = index, start, fresh, rng
        self.hours: dict[int, list[str]] = {}
        head = [{"resource": {"resourceType": "Patient", "id": f"p{index}", "gender": "female",
                              "birthDate": "1950-01-01"}},
                {"resource": {"resourceType": "Encounter", "id": str(900000 + index), "status": "in-progress",
                              "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                              "subject": {"reference": f"Patient/p{index}"},
                              "period": {"start": start.isoformat()}}}]
        self.head = ",".join(json.dumps(e) for e in head)
        self.version = 0

    def _hour(self, h: int) -> list[str]:
        key = (h, self.version) if self.fresh else h
        if key not in self.hours:
            t = self.start + dt.timedelta(hours=h, minutes=15)
            out = []
            codes = VITALS + (LABS if h % 24 == 20 else ())
            for j, (code, value, unit) in enumerate(codes):
                v = round(value * (1 + 0.04 * self.rng.standard_normal()), 1)
                v = min(v, 100.0) if unit == "%" else v
                res = {"resourceType": "Observation", "id": f"o{self.index}-{h}-{j}-{self.version}",
                       "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                       "subject": {"reference": f"Patient/p{self.index}"},
                       "encounter": {"reference": f"Encounter/{900000 + self.index}"},
                       "effectiveDateTime": t.isoformat(),
                       "valueQuantity": {"value": v, "system": "http://unitsofmeasure.org", "code": unit}}
                out.append(json.dumps({"resource": res}))
            self.hours[key] = out
        return self.hours[key]

    def body(self, k: int) -> bytes:
        """The 24-hour window ending at hour 24 + k (sliding) or a new one (fresh)."""
        if self.fresh:
            self.version += 1
            self.hours.clear()
        end = 24 + (k % 400)
        entries = [self.head] + [e for h in range(end - 24, end) for e in self._hour(h)]
        labs_window = [e for h in range(end - 48, end - 24) if h % 24 == 20 for e in self._hour(h)[5:]]
        text = '{"resourceType":"Bundle","type":"collection","entry":[' + ",".join(entries + labs_window) + "]}"
        return text.encode()


def request(method: str, path: str, token: str, body: bytes = b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/fhir+json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def client(port: int, make, stop: dict, latencies: list, statuses: dict):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    k = 0
    while not stop["now"]:
        payload = make(k)
        k += 1
        t0 = time.perf_counter()
        writer.write(payload)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - t0)
        status = int(head.split(b" ", 2)[1])
        statuses[status] = statuses.get(status, 0) + 1
        if len(latencies) >= stop["requests"] or time.perf_counter() > stop["until"]:
            stop["now"] = True
    writer.close()


async def load(port: int, makers: list, requests: int, duration: float):
    latencies, statuses = [], {}
    stop = {"now": False, "requests": requests, "until": time.perf_counter() + duration}
    t0 = time.perf_counter()
    await asyncio.gather(*(client(port, m, stop, latencies, statuses) for m in makers))
    return np.array(latencies), statuses, time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(name: str, lat: np.ndarray, statuses: dict, wall: float, cpu: float) -> None:
    n = len(lat)
    p50, p90, p99 = (np.percentile(lat, q) * 1e3 for q in (50, 90, 99))
    print(f"{name:<22} {n:>6} requests in {wall:6.1f} s: {n / wall:7.1f} req/s; latency p50 {p50:6.1f} ms, "
          f"p90 {p90:6.1f} ms, p99 {p99:6.1f} ms; server CPU {cpu / n * 1e3:5.2f} ms/request; status {statuses}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="run directory (models/, operating_points.json)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--mode", choices=("sliding", "fresh"), default="sliding")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--server-cpus", default=None, help="taskset CPU list for the server, e.g. 0")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="service_load_"))
    run = a.run or fit_models(tmp)
    token = secrets.token_urlsafe(24)
    (tmp / "token").write_text(token)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "sepsiscope.cli", "serve", "--run", str(run), "--port", str(port),
           "--token-file", str(tmp / "token"), "--log-level", "warning"]
    if a.server_cpus is not None:
        cmd = ["taskset", "-c", a.server_cpus, *cmd]
        others = sorted(set(range(os.cpu_count())) - {int(c) for c in a.server_cpus.split(",")})
        if others:
            os.sched_setaffinity(0, others)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start: {server.stderr.read()}")
                time.sleep(0.3)
        print(f"cpus={os.cpu_count()} clients={a.clients} mode={a.mode} bound: {a.requests} requests or "
              f"{a.duration:g} s; load average before: {os.getloadavg()[0]:.2f}")
        rng = np.random.default_rng(0)
        start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        patients = [Patient(i, start, a.mode == "fresh", rng) for i in range(a.clients)]
        size = len(patients[0].body(0))
        print(f"bundle: {size / 1024:.0f} kB, {patients[0].body(0).count(b'Observation')} Observations")
        health = [lambda k: request("GET", "/healthz", token) for _ in range(a.clients)]
        score = [lambda k, p=p: request("POST", "/v1/score", token, p.body(k)) for p in patients]
        asyncio.run(load(port, score, a.warmup, 60.0))   # warm-up: first calls compile and fill caches
        c0 = cpu_seconds(server.pid)
        lat, st, wall = asyncio.run(load(port, health, a.requests, a.duration))
        report("GET /healthz", lat, st, wall, cpu_seconds(server.pid) - c0)
        ref = len(lat) / wall
        c0 = cpu_seconds(server.pid)
        lat, st, wall = asyncio.run(load(port, score, a.requests, a.duration))
        report(f"POST /v1/score ({a.mode})", lat, st, wall, cpu_seconds(server.pid) - c0)
        print(f"score / healthz throughput: {len(lat) / wall / ref:.3f}; load average after: "
              f"{os.getloadavg()[0]:.2f}")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
