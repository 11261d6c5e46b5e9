"""Readers (exit code 1): PhysioNet folders and zips, MIMIC folders that cannot be read."""

from __future__ import annotations

import gzip
import os
import shutil
import zipfile

from tests.badinput.conftest import MIMIC4, Case, good_psv_rows, psv_row, write_psv



def _header(replace: dict | None = None, drop: str | None = None) -> str:
    from ehr.sources.physionet import HEADER

    cols = [replace.get(h, h) if replace else h for h in HEADER if h != drop]
    return "|".join(cols)


def _psv_dir(header=None, rows=None, name="p000001.psv", folder="psv"):
    def setup(fx, tmp):
        write_psv(tmp / folder / name, rows if rows is not None else good_psv_rows(), header)
    return setup


def _text(path, content: bytes):
    def setup(fx, tmp):
        (tmp / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp / path).write_bytes(content)
    return setup


def _zip(members: dict, corrupt: bool = False):
    def setup(fx, tmp):
        with zipfile.ZipFile(tmp / "d.zip", "w", zipfile.ZIP_DEFLATED) as z:
            for name, text in members.items():
                z.writestr(name, text)
        if corrupt:  # flip bytes inside the first member's compressed data
            raw = bytearray((tmp / "d.zip").read_bytes())
            for i in range(40, 60):
                raw[i] ^= 0xFF
            (tmp / "d.zip").write_bytes(bytes(raw))
    return setup


def _good_psv_text(n=6):
    return _header() + "\n" + "\n".join(good_psv_rows(n)) + "\n"


def _outside_symlink(fx, tmp):
    (tmp / "psv").mkdir()
    os.symlink("/etc/passwd", tmp / "psv" / "p000001.psv")


def _duplicate_stay(fx, tmp):
    for sub in ("a", "b"):
        write_psv(tmp / "psv" / sub / "p000001.psv", good_psv_rows())


def _mimic(change):
    def setup(fx, tmp):
        shutil.copytree(MIMIC4, tmp / "m")
        change(tmp / "m")
    return setup


def _rm(*names):
    def change(m):
        for n in names:
            (m / n).unlink()
    return change


def _truncate_gz(name):
    def change(m):
        raw = (m / name).read_bytes()
        (m / name).write_bytes(raw[: len(raw) * 2 // 3])
    return change


def _rewrite_gz(name, edit):
    def change(m):
        text = gzip.decompress((m / name).read_bytes()).decode()
        (m / name).write_bytes(gzip.compress(edit(text).encode()))
    return change


def _many_rows(text: str) -> str:
    head, _, body = text.partition("\n")
    return head + "\n" + body * (200_000 // max(1, body.count("\n")))


def _symlink_out(name):
    def change(m):
        (m / name).unlink()
        os.symlink(MIMIC4 / name, m / name)
    return change


ING = "ingest {tmp}/psv --out {tmp}/c --no-progress"
ZIP = "ingest {tmp}/d.zip --out {tmp}/c --no-progress"
MIM = "ingest {tmp}/m --source mimic --out {tmp}/c --no-progress"
RUN_MIM = "run --mimic {tmp}/m --out {tmp}/run --no-progress --n-boot 5"

CASES = [
    # -- PhysioNet folders
    Case("psv-renamed-column", ING, 1, "missing column(s) ['HR']; unexpected column(s) ['HeartRate']",
         _psv_dir(header=_header({"HR": "HeartRate"}))),
    Case("psv-missing-column", ING, 1, "missing column(s) ['SepsisLabel']", _psv_dir(header=_header(drop="SepsisLabel"))),
    Case("psv-markup-in-header", ING, 1, "unexpected column(s) ['[/]']", _psv_dir(header=_header({"HR": "[/]"}))),
    Case("psv-emoji-code-in-header", ING, 1, "':x:'", _psv_dir(header=_header({"HR": ":x:"}))),
    Case("psv-markup-in-path", "ingest {tmp}/[red]x[/] --out {tmp}/c --no-progress", 1, "[red]x[/]",
         _psv_dir(header=_header({"HR": "[bold]"}), folder="[red]x[/]")),
    Case("psv-columns-out-of-order", ING, 1, "columns out of order",
         _psv_dir(header=_header({"HR": "O2Sat", "O2Sat": "HR"}))),
    Case("psv-empty-folder", ING, 1, "no readable .psv file (0 file(s) seen)", lambda fx, tmp: (tmp / "psv").mkdir()),
    Case("psv-empty-file", ING, 1, "empty file", _text("psv/p000001.psv", b"")),
    Case("psv-header-only", ING, 1, "header only, no rows", _text("psv/p000001.psv", (_header() + "\n").encode())),
    Case("psv-no-header", ING, 1, "missing header", _text("psv/p000001.psv", (psv_row(ICULOS=1) + "\n").encode())),
    Case("psv-binary", ING, 1, "wrong header", _text("psv/p000001.psv", b"\x89PNG\r\n\x1a\n\x00\x00")),
    Case("psv-bad-name", ING, 1, "file name is not pNNNNNN.psv", _psv_dir(name="patient.psv")),
    Case("psv-all-iculos-bad", ING, 1, "no usable row", _psv_dir(rows=[psv_row(ICULOS=-1, HR=80)] * 3)),
    Case("psv-iculos-huge-only", ING, 1, "ICULOS over 8760 h", _psv_dir(rows=[psv_row(ICULOS=1e8, HR=80)])),
    Case("psv-symlink-outside", ING, 1, "symlink to a file outside the input folder", _outside_symlink),
    Case("psv-duplicate-stay", ING, 1, "stay id 1 appears in more than one file", _duplicate_stay),
    # -- PhysioNet zips
    Case("zip-not-a-zip", ZIP, 1, "not a readable zip file", _text("d.zip", b"this is not a zip")),
    Case("zip-empty-bytes", ZIP, 1, "not a readable zip file", _text("d.zip", b"")),
    Case("zip-truncated", ZIP, 1, "not a readable zip file",
         lambda fx, tmp: (_zip({"a/p000001.psv": _good_psv_text()})(fx, tmp),
                          (tmp / "d.zip").write_bytes((tmp / "d.zip").read_bytes()[:60]))),
    Case("zip-corrupt-member", ZIP, 1, "member a/p000001.psv is corrupt",
         _zip({"a/p000001.psv": _good_psv_text(40)}, corrupt=True)),
    Case("zip-no-psv", ZIP, 1, "no readable .psv file (0 file(s) seen)", _zip({"readme.txt": "hello"})),
    Case("zip-bomb-member", ZIP, 1, "zip member larger than", _zip({"a/p000001.psv": "0" * (17 * 2**20)})),
    Case("zip-wrong-header", ZIP, 1, "missing column(s) ['HR']",
         _zip({"a/p000001.psv": _header(drop="HR") + "\n1|2\n"})),
    Case("run-physionet-not-a-zip", "run --physionet {tmp}/d.zip --out {tmp}/run --no-progress", 1,
         "not a readable zip file", _text("d.zip", b"PK\x03\x04 broken")),
    Case("run-physionet-three-stays", "run --physionet {tmp}/psv --out {tmp}/run --no-progress --models gbdt", 1,
         "both positive and negative screens are needed",
         lambda fx, tmp: [write_psv(tmp / "psv" / f"p00000{i}.psv", good_psv_rows(septic_from=4 if i == 1 else None))
                          for i in (1, 2, 3)]),
    # -- FHIR
    Case("fhir-not-json", "ingest {tmp}/b.json --source fhir --out {tmp}/c --no-progress", 1,
         "no observation could be read", _text("b.json", b"{not json[/]")),
    Case("fhir-bundle-without-type", "ingest {tmp}/b.json --source fhir --out {tmp}/c --no-progress", 1,
         "not a valid FHIR R4 Bundle", _text("b.json", b'{"resourceType": "Bundle", "entry": []}')),
    # -- MIMIC folders
    Case("mimic-no-prescriptions", MIM, 1, "required table 'hosp/prescriptions'", _mimic(_rm("hosp/prescriptions.csv.gz"))),
    Case("mimic-no-microbiology", MIM, 1, "no cultures, so no suspected infection",
         _mimic(_rm("hosp/microbiologyevents.csv.gz"))),
    Case("mimic-no-chartevents", MIM, 1, "required table 'icu/chartevents'", _mimic(_rm("icu/chartevents.csv.gz"))),
    Case("mimic-no-labevents", MIM, 1, "required table 'hosp/labevents'", _mimic(_rm("hosp/labevents.csv.gz"))),
    Case("mimic-no-icustays", MIM, 1, "required table 'icu/icustays'", _mimic(_rm("icu/icustays.csv.gz"))),
    Case("mimic-no-admissions", MIM, 1, "required table 'hosp/admissions'", _mimic(_rm("hosp/admissions.csv.gz"))),
    Case("mimic-no-tables", MIM, 1, "no ICUSTAYS table", lambda fx, tmp: (tmp / "m").mkdir()),
    Case("mimic-truncated-chartevents", MIM, 1, "chartevents.csv.gz: cannot read the CSV header",
         _mimic(_truncate_gz("icu/chartevents.csv.gz"))),
    Case("mimic-truncated-large-chartevents", MIM, 1, "chartevents.csv.gz: unreadable after",
         _mimic(lambda m: (_rewrite_gz("icu/chartevents.csv.gz", _many_rows)(m),
                           _truncate_gz("icu/chartevents.csv.gz")(m)))),
    Case("mimic-garbage-labevents", MIM, 1, "labevents.csv.gz: cannot read the CSV header",
         _mimic(lambda m: (m / "hosp/labevents.csv.gz").write_bytes(b"\x1f\x8b garbage"))),
    Case("mimic-icustays-no-intime", MIM, 1, "missing column(s) ['intime']",
         _mimic(_rewrite_gz("icu/icustays.csv.gz", lambda t: t.replace("intime", "in_time", 1)))),
    Case("mimic-iii-patients-in-iv", MIM, 1, "has MIMIC-III columns",
         _mimic(_rewrite_gz("hosp/patients.csv.gz", lambda t: t.replace("anchor_age", "dob", 1)))),
    Case("mimic-symlinked-prescriptions", MIM, 1, "required table 'hosp/prescriptions'",
         _mimic(_symlink_out("hosp/prescriptions.csv.gz"))),
    Case("run-mimic-no-prescriptions", RUN_MIM, 1, "required table 'hosp/prescriptions'",
         _mimic(_rm("hosp/prescriptions.csv.gz"))),
]
