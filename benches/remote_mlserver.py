"""Remote members against a real MLServer (PyPI `mlserver` with `mlserver-sklearn`) serving a sklearn
model, in one run on this machine. MLServer's model metadata lists no inputs or outputs unless its
model-settings declare them, and its sklearn runtime answers float64 (`predict_proba`) or int64
(`predict`): registration relies on the probe and on the declared features and output.

1. a logistic regression on the technical features, saved with joblib for MLServer and exported by
   skl2onnx with its defaults (a ZipMap output) for quorum's own registry;
2. registration of the MLServer model by URL (`--output predict_proba:1`), and a wrong output refused;
3. agreement: the remote member against the same model run locally from its ONNX export;
4. a kill -9 of MLServer under load: an ensemble with the local member and the remote one answers,
   degraded, within its latency budget.

Everything goes to 127.0.0.1 and MLServer is stopped at the end; --check fails the run on a problem.

    .venv-mlserver/bin/python benches/remote_mlserver.py [--check]
"""

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
import tempfile

import joblib
import numpy as np
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

import quorum

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from remote_faults import kill_under_load  # noqa: E402
from serve_load import REPO, free_port, wait_ready  # noqa: E402

BUDGET_MS = 100.0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()

    manifest = json.load(open(os.path.join(REPO, "examples/models/manifest.json")))["models"]
    technical = next(m for m in manifest if m["name"] == "technical")
    features = technical["features"]
    x, y = [], []
    with open(os.path.join(REPO, "examples/data/holdout.csv")) as f:
        for row in csv.DictReader(f):
            values = [float(row[name]) for name in features]
            if all(math.isfinite(v) for v in values):
                x.append(values)
                y.append(int(row["next_day_up"]))
    x = np.array(x)
    model = LogisticRegression(max_iter=1000).fit(x[:250], y[:250])

    work = tempfile.mkdtemp(prefix="quorum-mlserver-")
    port = free_port(span=3)
    model_dir = os.path.join(work, "lr")
    os.makedirs(model_dir)
    joblib.dump(model, os.path.join(model_dir, "model.joblib"))
    json.dump({"name": "lr", "implementation": "mlserver_sklearn.SKLearnModel",
               "parameters": {"uri": "./model.joblib", "version": "v1"}},
              open(os.path.join(model_dir, "model-settings.json"), "w"))
    json.dump({"http_port": port, "grpc_port": port + 1, "metrics_port": port + 2, "parallel_workers": 0,
               "metrics_endpoint": None}, open(os.path.join(work, "settings.json"), "w"))
    onnx_path = os.path.join(work, "lr.onnx")
    with open(onnx_path, "wb") as f:
        f.write(to_onnx(model, x[:1].astype(np.float32)).SerializeToString())

    log = open(os.path.join(work, "mlserver.log"), "w")
    mlserver = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "mlserver"), "start", work],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    problems = []
    try:
        wait_ready(port, "/v2/models/lr/ready", seconds=120)
        engine = quorum.InferenceEngine(os.path.join(work, "home"), persistence=False)
        url = f"http://127.0.0.1:{port}/v2/models/lr"
        try:
            engine.registry.register_remote("mlserver_lr", url, features, output="no_such_output:1")
            problems.append("a wrong output was registered")
        except quorum.ModelLoadError as e:
            print(f"a wrong output is refused: {e}")
        meta = engine.registry.register_remote("mlserver_lr", url, features, output="predict_proba:1",
                                               kind="technical")
        print(f"registered mlserver_lr@{meta['version']}: {json.dumps(meta['remote'])}")
        print(f"  registration noted: {meta['metadata'].get('remote')}")
        engine.register_model("onnx_lr", onnx_path, features, kind="technical")
        engine.create_ensemble({"name": "remote", "members": ["mlserver_lr"]})
        engine.create_ensemble({"name": "local", "members": ["onnx_lr"]})
        engine.create_ensemble({"name": "desk", "members": ["onnx_lr", "mlserver_lr"], "min_members": 1,
                                "latency_budget_ms": BUDGET_MS})
        rows = [list(map(float, r)) for r in x[250:]]
        expected = model.predict_proba(x[250:])[:, 1]
        remote = np.array([engine.predict_row("remote", r).prediction for r in rows])
        local = np.array([engine.predict_row("local", r).prediction for r in rows])
        batch = engine.predict_batch("remote", np.array(rows, dtype=np.float32)).predictions
        print(f"agreement over {len(rows)} rows: |MLServer member - sklearn| at most "
              f"{np.abs(remote - expected).max():.2e}, |MLServer member - ONNX export in quorum| at most "
              f"{np.abs(remote - local).max():.2e}, one batch call at most {np.abs(batch - expected).max():.2e}")
        if np.abs(remote - expected).max() > 1e-5 or np.abs(batch - expected).max() > 1e-5:
            problems.append("the MLServer member disagrees with sklearn")

        def kill():
            os.killpg(mlserver.pid, signal.SIGKILL)
            mlserver.wait()

        line, problem = kill_under_load(engine, "desk", rows, kill, 8, BUDGET_MS)
        print(f"kill -9 of MLServer under 8 callers: {line}")
        if problem:
            problems.append(problem)
    finally:
        if mlserver.poll() is None:
            os.killpg(mlserver.pid, signal.SIGKILL)
        mlserver.wait()
        log.close()
        subprocess.run(["rm", "-rf", work])
    if problems:
        print("\nPROBLEMS:\n- " + "\n- ".join(problems))
        if args.check:
            sys.exit(1)


if __name__ == "__main__":
    main()
