"""Usage errors (exit code 2): bad option values, missing inputs, outputs that would replace an input.

Each is refused before anything is read or written.
"""

from __future__ import annotations

from tests.badinput.conftest import Case

S = "--screens {fx}/screens.parquet"
OUT = "--out {tmp}/out"


def _file(tmp, name="file.txt"):
    (tmp / name).write_text("x")


def _foreign_dir(tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / "mine.txt").write_text("mine")


def _psv_in_out(tmp):
    (tmp / "out" / "data").mkdir(parents=True)
    (tmp / "out" / "data" / "p000001.psv").write_text("HR\n")


def _out_file(tmp):
    (tmp / "out").write_text("a file")


CASES = [
    # -- the command line itself
    Case("no-such-command", "nosuch", 2, "No such command"),
    Case("unknown-option", "screens {fx}/cohort --frobnicate", 2, "No such option"),
    Case("missing-required-option", "train cpn " + OUT, 2, "--screens"),
    Case("missing-argument", "predict --screens {fx}/screens.parquet", 2, "Missing argument 'model_dir'"),
    Case("extra-argument", "report {fx}/run extra", 2, "unexpected extra argument"),
    # -- train cpn
    Case("cpn-max-iter-0", f"train cpn {S} {OUT} --max-iter 0", 2, "--max-iter"),
    Case("cpn-max-iter-negative", f"train cpn {S} {OUT} --max-iter -1", 2, "--max-iter"),
    Case("cpn-max-iter-text", f"train cpn {S} {OUT} --max-iter x", 2, "--max-iter"),
    Case("cpn-max-iter-huge", f"train cpn {S} {OUT} --max-iter 99999999", 2, "--max-iter"),
    Case("cpn-max-rows-0", f"train cpn {S} {OUT} --max-rows 0", 2, "--max-rows"),
    Case("cpn-seed-negative", f"train cpn {S} {OUT} --seed -1", 2, "--seed"),
    Case("cpn-seed-too-large", f"train cpn {S} {OUT} --seed 4294967296", 2, "--seed"),
    Case("cpn-screens-missing", f"train cpn --screens {{tmp}}/none.parquet {OUT}", 2, "none.parquet: no such file"),
    Case("cpn-screens-is-folder", f"train cpn --screens {{fx}}/cohort {OUT}", 2, "is a folder"),
    Case("cpn-network-missing", f"train cpn {S} {OUT} --network {{tmp}}/net.xml", 2, "net.xml: no such file"),
    Case("cpn-out-foreign-folder", f"train cpn {S} {OUT}", 2, "holds no model.json", lambda fx, tmp: _foreign_dir(tmp)),
    Case("cpn-out-holds-screens", "train cpn --screens {fx}/screens.parquet --out {fx}", 2, "holds the input --screens"),
    Case("cpn-out-is-file", f"train cpn {S} {OUT}", 2, "is a file", lambda fx, tmp: _out_file(tmp)),
    Case("cpn-out-is-another-folder-in-fx", f"train cpn {S} --out {{fx}}/notes", 2, "holds no model.json"),
    # -- train gbdt
    Case("gbdt-horizon-negative", f"train gbdt {S} {OUT} --horizon-h -5", 2, "--horizon-h"),
    Case("gbdt-horizon-nan", f"train gbdt {S} {OUT} --horizon-h nan", 2, "positive, finite"),
    Case("gbdt-horizon-inf", f"train gbdt {S} {OUT} --horizon-h inf", 2, "positive, finite"),
    Case("gbdt-horizon-zero", f"train gbdt {S} {OUT} --horizon-h 0", 2, "positive, finite"),
    Case("gbdt-folds-1", f"train gbdt {S} {OUT} --folds 1", 2, "--folds"),
    Case("gbdt-grid-unknown", f"train gbdt {S} {OUT} --grid foo", 2, "'foo' is not one of default, full, none"),
    Case("gbdt-backend-unknown", f"train gbdt {S} {OUT} --backend catboost", 2, "catboost"),
    Case("gbdt-device-unknown", f"train gbdt {S} {OUT} --device tpu", 2, "tpu"),
    Case("gbdt-n-jobs-0", f"train gbdt {S} {OUT} --n-jobs 0", 2, "--n-jobs"),
    Case("gbdt-seed-negative", f"train gbdt {S} {OUT} --seed -3", 2, "--seed"),
    Case("gbdt-out-foreign-folder", f"train gbdt {S} {OUT} --grid none", 2, "holds no model.json",
         lambda fx, tmp: _foreign_dir(tmp)),
    Case("gbdt-screens-missing", f"train gbdt --screens {{tmp}}/x.parquet {OUT}", 2, "x.parquet: no such file"),
    # -- screens
    Case("screens-horizon-negative", "screens {fx}/cohort --out {tmp}/s.parquet --horizon-h -5", 2, "--horizon-h"),
    Case("screens-horizon-nan", "screens {fx}/cohort --out {tmp}/s.parquet --horizon-h nan", 2, "positive, finite"),
    Case("screens-cohort-missing", "screens {tmp}/nocohort", 2, "nocohort: no such cohort directory"),
    Case("screens-cohort-is-file", "screens {fx}/screens.parquet --out {tmp}/s.parquet", 2, "is a file"),
    Case("screens-out-events", "screens {fx}/cohort --out {fx}/cohort/events.parquet", 2,
         "is also the input COHORT/events.parquet"),
    Case("screens-out-stays", "screens {fx}/cohort --out {fx}/cohort/stays.parquet", 2, "COHORT/stays.parquet"),
    Case("screens-out-cohort-json", "screens {fx}/cohort --out {fx}/cohort/cohort.json", 2, "COHORT/cohort.json"),
    Case("screens-out-is-folder", "screens {fx}/cohort --out {fx}/notes", 2, "is a folder"),
    Case("screens-out-in-model", "screens {fx}/cohort --out {fx}/gbdt/s.parquet", 2, "inside the model folder"),
    # -- predict
    Case("predict-out-is-screens", "predict {fx}/gbdt --screens {fx}/screens.parquet --out {fx}/screens.parquet",
         2, "is also the input --screens"),
    Case("predict-out-model-json", "predict {fx}/gbdt --screens {fx}/screens.parquet --out {fx}/gbdt/model.json",
         2, "inside the model folder"),
    Case("predict-out-booster", "predict {fx}/gbdt --screens {fx}/screens.parquet --out {fx}/gbdt/booster.txt",
         2, "inside the model folder"),
    Case("predict-out-new-file-in-model", "predict {fx}/cpn --screens {fx}/screens.parquet --out {fx}/cpn/p.parquet",
         2, "inside the model folder"),
    Case("predict-out-in-other-model", "predict {fx}/cpn --screens {fx}/screens.parquet --out {fx}/gbdt/p.parquet",
         2, "inside the model folder"),
    Case("predict-out-is-folder", "predict {fx}/gbdt --screens {fx}/screens.parquet --out {fx}/notes", 2,
         "is a folder"),
    Case("predict-model-missing", "predict {tmp}/nomodel --screens {fx}/screens.parquet --out {tmp}/p.parquet", 2,
         "nomodel: no such model folder"),
    Case("predict-model-is-file", "predict {fx}/screens.parquet --screens {fx}/screens.parquet --out {tmp}/p.parquet",
         2, "is a file"),
    Case("predict-screens-missing", "predict {fx}/gbdt --screens {tmp}/s.parquet --out {tmp}/p.parquet", 2,
         "s.parquet: no such file"),
    Case("predict-name-empty", "predict {fx}/gbdt --screens {fx}/screens.parquet --out {tmp}/p.parquet --name ''", 2,
         "--name"),
    # -- run
    Case("run-models-unknown", f"run {OUT} --models foo", 2, "unknown model(s) 'foo'"),
    Case("run-models-empty", f"run {OUT} --models ,", 2, "name at least one"),
    Case("run-models-twice", f"run {OUT} --models cpn,cpn", 2, "named twice"),
    Case("run-models-news2", f"run {OUT} --models news2", 2, "unknown model(s) 'news2'"),
    Case("run-models-stack-alone", f"run {OUT} --models stack", 2, "combines other models"),
    # -- train stack: its --out is replaced as a whole, so a run folder holding its inputs is refused
    Case("stack-out-holds-predictions", f"train stack --predictions {{fx}}/run/predictions.parquet {S} "
         "--out {fx}/run", 2, "holds the input --predictions"),
    Case("stack-out-foreign-folder", f"train stack --predictions {{fx}}/run/predictions.parquet {S} {OUT}", 2,
         "holds no model.json", lambda fx, tmp: _foreign_dir(tmp)),
    Case("stack-horizon-nan", f"train stack --predictions {{fx}}/run/predictions.parquet {S} {OUT} --horizon-h nan",
         2, "positive, finite"),
    Case("stack-seed-negative", f"train stack --predictions {{fx}}/run/predictions.parquet {S} {OUT} --seed -1",
         2, "--seed"),
    Case("run-horizon-negative", f"run {OUT} --horizon-h -5", 2, "--horizon-h"),
    Case("run-horizon-nan", f"run {OUT} --horizon-h nan", 2, "positive, finite"),
    Case("run-window-zero", f"run {OUT} --window-h 0", 2, "--window-h"),
    Case("run-silencing-negative", f"run {OUT} --silencing-h -1", 2, "--silencing-h"),
    Case("run-silencing-inf", f"run {OUT} --silencing-h inf", 2, "positive, finite"),
    Case("run-n-boot-0", f"run {OUT} --n-boot 0", 2, "--n-boot"),
    Case("run-n-stays-0", f"run {OUT} --n-stays 0", 2, "--n-stays"),
    Case("run-n-stays-text", f"run {OUT} --n-stays many", 2, "--n-stays"),
    Case("run-seed-negative", f"run {OUT} --seed -5", 2, "--seed"),
    Case("run-backend-unknown", f"run {OUT} --gbdt-backend foo", 2, "'foo' is not one of lightgbm, xgboost"),
    Case("run-cpn-max-iter-0", f"run {OUT} --cpn-max-iter 0", 2, "--cpn-max-iter"),
    Case("run-gbdt-n-estimators-0", f"run {OUT} --gbdt-n-estimators 0", 2, "--gbdt-n-estimators"),
    Case("run-two-sources", f"run {OUT} --physionet {{fx}}/psv --mimic {{mimic4}}", 2, "at most one"),
    Case("run-physionet-missing", f"run {OUT} --physionet {{tmp}}/nozip.zip", 2, "nozip.zip: no such file"),
    Case("run-mimic-missing", f"run {OUT} --mimic {{tmp}}/nomimic", 2, "nomimic: no such folder"),
    Case("run-mimic-is-file", f"run {OUT} --mimic {{fx}}/screens.parquet", 2, "is a file"),
    Case("run-definition-unknown", f"run {OUT} --definition sirs", 2, "--definition"),
    Case("run-allow-missing-without-mimic", f"run {OUT} --allow-missing prescriptions", 2, "--mimic only"),
    Case("run-allow-missing-icustays", f"run {OUT} --mimic {{mimic4}} --allow-missing icustays", 2,
         "unknown or required table(s) ['icustays']"),
    Case("run-out-existing-run", "run --out {fx}/run", 2, "pass --overwrite"),
    Case("run-out-foreign-with-overwrite", "run --out {fx}/notes --overwrite", 2, "holds no run.json"),
    Case("run-out-cohort-with-overwrite", "run --out {fx}/cohort --overwrite", 2, "holds no run.json"),
    Case("run-out-is-file", f"run {OUT}", 2, "is a file", lambda fx, tmp: _out_file(tmp)),
    Case("run-out-holds-input", "run --out {tmp}/out --overwrite --physionet {tmp}/out/data", 2,
         "holds the input --physionet", lambda fx, tmp: _psv_in_out(tmp)),
    # -- report
    Case("report-run-missing", "report {tmp}/norun", 2, "norun: no such run directory"),
    Case("report-run-is-file", "report {fx}/screens.parquet", 2, "is a file"),
    Case("report-out-run-json", "report {fx}/run -o {fx}/run/run.json", 2, "expected an .html file name"),
    Case("report-out-run-json-html", "report {fx}/run -o {fx}/run/models/cpn/model.html", 2,
         "inside the model folder"),
    Case("report-out-predictions", "report {fx}/run -o {fx}/run/predictions.parquet", 2, "expected an .html"),
    Case("report-out-txt", "report {fx}/run -o {tmp}/report.txt", 2, "expected an .html"),
    Case("report-out-is-folder", "report {fx}/run -o {tmp}/out.html", 2, "is a folder",
         lambda fx, tmp: (tmp / "out.html").mkdir()),
    Case("report-figures-is-file", "report {fx}/run -o {tmp}/r.html --figures {fx}/image.png", 2, "is a file"),
    # -- ingest / simulate
    Case("ingest-source-unknown", "ingest {fx}/psv --source fhir2 --out {tmp}/c", 2, "'fhir2' is not one of"),
    Case("ingest-path-missing", "ingest {tmp}/nothing --out {tmp}/c", 2, "nothing: no such file or folder"),
    Case("ingest-out-foreign", "ingest {fx}/psv --out {fx}/notes", 2, "holds no cohort.json"),
    Case("ingest-out-model", "ingest {fx}/psv --out {fx}/gbdt", 2, "holds no cohort.json"),
    Case("ingest-out-holds-input", "ingest {tmp}/out/data --out {tmp}/out", 2, "holds the input source",
         lambda fx, tmp: _psv_in_out(tmp)),
    Case("ingest-out-is-file", "ingest {fx}/psv --out {tmp}/out", 2, "is a file", lambda fx, tmp: _out_file(tmp)),
    Case("ingest-allow-missing-physionet", "ingest {fx}/psv --out {tmp}/c --allow-missing prescriptions", 2,
         "--source mimic only"),
    Case("ingest-mimic-allow-missing-unknown", "ingest {mimic4} --source mimic --out {tmp}/c --allow-missing foo", 2,
         "unknown or required table(s) ['foo']"),
    Case("ingest-mimic-definition-unknown", "ingest {mimic4} --source mimic --out {tmp}/c --definition sirs", 2,
         "--definition"),
    Case("ingest-mimic-path-is-file", "ingest {fx}/screens.parquet --source mimic --out {tmp}/c", 2,
         "not a folder of MIMIC tables"),
    Case("ingest-fhir-path-missing", "ingest {tmp}/none.ndjson --source fhir --out {tmp}/c", 2,
         "none.ndjson: no such file or folder"),
    Case("simulate-n-stays-0", "simulate --n-stays 0 --out {tmp}/c", 2, "--n-stays"),
    Case("simulate-seed-negative", "simulate --seed -1 --out {tmp}/c", 2, "--seed"),
    Case("simulate-out-foreign", "simulate --n-stays 5 --out {fx}/notes", 2, "holds no cohort.json"),
    Case("simulate-cxr-images-missing", "simulate --n-stays 5 --out {tmp}/c --cxr-images {tmp}/imgs", 2,
         "imgs: no such folder"),
    # -- imaging
    Case("explain-image-missing", "explain-image {tmp}/x.png --model {fx}/gbdt --finding f --out {tmp}/o.png", 2,
         "x.png: no such file"),
    Case("explain-image-out-is-input", "explain-image {fx}/image.png --model {fx}/gbdt --finding f --out "
         "{fx}/image.png", 2, "is also the input IMAGE"),
    Case("explain-image-out-txt", "explain-image {fx}/image.png --model {fx}/gbdt --finding f --out {tmp}/o.txt", 2,
         "expected a .png or .jpg"),
    Case("explain-image-model-missing", "explain-image {fx}/image.png --model {tmp}/m --finding f --out {tmp}/o.png",
         2, "no such model folder"),
    Case("explain-image-out-in-model", "explain-image {fx}/image.png --model {fx}/gbdt --finding f --out "
         "{fx}/gbdt/o.png", 2, "inside the model folder"),
    Case("train-imaging-epochs-0", "train imaging --data {fx}/notes --out {tmp}/m --epochs 0", 2, "--epochs"),
    Case("train-imaging-lr-nan", "train imaging --data {fx}/notes --out {tmp}/m --lr nan", 2, "learning rate"),
    Case("train-imaging-lr-negative", "train imaging --data {fx}/notes --out {tmp}/m --lr -0.1", 2, "learning rate"),
    Case("train-imaging-val-fraction", "train imaging --data {fx}/notes --out {tmp}/m --val-fraction 1.5", 2,
         "fraction in [0, 1)"),
    Case("train-imaging-arch", "train imaging --data {fx}/notes --out {tmp}/m --arch vgg", 2, "'vgg' is not one of"),
    Case("train-imaging-data-missing", "train imaging --data {tmp}/nodata --out {tmp}/m --arch small", 2,
         "nodata: no such file or folder"),
    Case("train-imaging-batch-0", "train imaging --data {fx}/notes --out {tmp}/m --batch-size 0", 2, "--batch-size"),
    Case("train-imaging-resume-nothing", "train imaging --data {fx}/notes --out {tmp}/m --arch small --resume", 2,
         "checkpoint.pt does not exist"),
    Case("train-imaging-out-foreign", "train imaging --data {fx}/notes --out {tmp}/out --arch small", 2,
         "holds no model.json or checkpoint.pt", lambda fx, tmp: _foreign_dir(tmp)),
    Case("cxr-images-cohort-missing", "cxr-images {tmp}/c", 2, "no such cohort directory"),
    Case("score-cxr-finding-map", "score-cxr {fx}/cohort --model {fx}/gbdt --finding-map bad", 2, "model=cxr pairs"),
    Case("score-cxr-model-missing", "score-cxr {fx}/cohort --model {tmp}/m", 2, "no such model folder"),
    Case("score-cxr-batch-0", "score-cxr {fx}/cohort --model {fx}/gbdt --batch-size 0", 2, "--batch-size"),
    # -- explain
    Case("explain-model-missing", "explain --model {tmp}/m", 2, "no such model folder"),
    Case("explain-run-missing", "explain 1 --run {tmp}/norun", 2, "norun: no such run directory"),
    Case("explain-nothing", "explain 1", 2, "give --run RUN, or --model DIR"),
    Case("explain-screens-missing", "explain 1 --model {fx}/cpn --screens {tmp}/s.parquet", 2, "no such file"),
    Case("explain-stay-unknown", "explain 999999 --model {fx}/cpn --screens {fx}/screens.parquet", 2,
         "stay 999999 is not in"),
    Case("explain-at-before-stay", "explain 200000 --model {fx}/cpn --screens {fx}/screens.parquet --at 1900-01-01", 2,
         "1900-01-01 00:00:00 is outside it"),
    Case("explain-gbdt-without-stay", "explain --model {fx}/gbdt", 2, "give a stay to explain"),
]
