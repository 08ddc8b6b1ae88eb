"""Remote members against a real NVIDIA Triton Inference Server (benches/triton_peer.py: the tritonserver
binary inside PyPI's nvidia-pytriton serving the example ensemble as `market`, one FP32 input per
feature, output `prediction`), in one run on this machine:

1. registration: quorum reads Triton's metadata, probes it and registers `triton_market` by URL;
2. agreement: the remote member's answers against quorum's own `market` on the held-out rows;
3. overhead: one caller, interleaved blocks, quorum's remote member (`predict_row`) against a raw
   `tritonclient.http` call of the same model with binary tensors — the difference of the medians;
   The same for raw tritonclient over HTTP against raw tritonclient over gRPC (what a gRPC transport
   could save, clients included), and for the member registered with hedging against without;
4. 64 callers: throughput of quorum's remote member and of 64 raw tritonclient callers, and how many
   inference requests Triton counted for each (its `nv_inference_request_success` metric);
5. a kill -9 of Triton under load: every prediction of an ensemble with a local member and the remote
   one still answers, degraded, within its latency budget;
6. Triton restarted on the same port: the member answers again once its breaker lets a trial through.

Everything goes to 127.0.0.1, each phase is bounded, and Triton is stopped at the end. With --check
the run fails when agreement or the fault phase fails; the timing goals are printed, never asserted.

    python benches/remote_triton.py --triton-python .venv-triton/bin/python [--calls 3000] [--check]
"""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
import tritonclient.http as httpclient

import quorum

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from remote_faults import kill_under_load  # noqa: E402
from serve_load import REPO, free_port, holdout_rows, wait_ready  # noqa: E402

MODELS = os.path.join(REPO, "examples/models")
BUDGET_MS = 100.0


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def triton_requests(metrics_port):
    """Inference requests Triton has answered for `market` (its own counter)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("nv_inference_request_success{") and 'model="market"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    raise SystemExit("Triton's metrics have no nv_inference_request_success for market")


class RawTriton:
    """A raw tritonclient call of `market`, as a user writes it: one [1, 1] FP32 input per feature,
    binary tensors, the `prediction` output."""

    def __init__(self, port, features):
        self.client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        self.features = features
        self.outputs = [httpclient.InferRequestedOutput("prediction", binary_data=True)]

    def __call__(self, row):
        inputs = []
        for name, value in zip(self.features, row):
            tensor = httpclient.InferInput(name, [1, 1], "FP32")
            tensor.set_data_from_numpy(np.array([[value]], dtype=np.float32), binary_data=True)
            inputs.append(tensor)
        return float(self.client.infer("market", inputs, outputs=self.outputs).as_numpy("prediction")[0, 0])


class RawTritonGrpc:
    """The same call over Triton's gRPC endpoint (KServe's grpc_service.proto) with tritonclient.grpc."""

    def __init__(self, port, features):
        import tritonclient.grpc as grpcclient

        self.grpc = grpcclient
        self.client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        self.features = features
        self.outputs = [grpcclient.InferRequestedOutput("prediction")]

    def __call__(self, row):
        inputs = []
        for name, value in zip(self.features, row):
            tensor = self.grpc.InferInput(name, [1, 1], "FP32")
            tensor.set_data_from_numpy(np.array([[value]], dtype=np.float32))
            inputs.append(tensor)
        return float(self.client.infer("market", inputs, outputs=self.outputs).as_numpy("prediction")[0, 0])


def interleaved(sides, rows, calls):
    """Single-caller latencies in µs of each of `sides` (name → call of one row), in alternating blocks of
    100 calls so that drift hits every side alike; the first two blocks of each are warm-up, dropped."""
    times = {name: [] for name in sides}
    names = list(sides)
    for block in range(len(names) * calls // 100):
        name = names[block % len(names)]
        call = sides[name]
        for i in range(100):
            row = rows[(block * 100 + i) % len(rows)]
            t = time.perf_counter()
            call(row)
            times[name].append((time.perf_counter() - t) * 1e6)
    return {name: sorted(s[200:]) for name, s in times.items()}


def latency_table(times):
    print("\n| one caller | p50 µs | p99 µs |\n|---|---|---|")
    for name, s in times.items():
        print(f"| {name} | {statistics.median(s):.1f} | {s[int(len(s) * 0.99)]:.1f} |")


def many_callers(call, rows, callers, per_caller):
    """`callers` threads making `per_caller` calls each; predictions per second and failures."""
    failures = []

    def caller(k):
        try:
            for i in range(per_caller):
                call(k, rows[(k * per_caller + i) % len(rows)])
        except Exception as e:  # noqa: BLE001 — reported, not hidden
            failures.append(repr(e))

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return callers * per_caller / (time.perf_counter() - started), failures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triton-python", required=True, help="a Python with nvidia-pytriton")
    parser.add_argument("--calls", type=int, default=3000, help="single-caller calls per side")
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--per-caller", type=int, default=40)
    parser.add_argument("--check", action="store_true", help="fail when agreement or the fault phase fails")
    args = parser.parse_args()

    port = free_port(span=3)
    log = tempfile.NamedTemporaryFile(prefix="quorum-triton-", suffix=".log", delete=False)
    # Its own session, so the kill reaches the Python backend's stubs too.
    triton = subprocess.Popen([args.triton_python, os.path.join(REPO, "benches/triton_peer.py"), str(port)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    home = tempfile.mkdtemp(prefix="quorum-remote-")
    problems = []
    try:
        wait_ready(port, "/v2/models/market/ready", seconds=180)
        manifest = json.load(open(os.path.join(MODELS, "manifest.json")))["models"]
        features = []
        for m in manifest:
            features += [f for f in m["features"] if f not in features]
        engine = quorum.InferenceEngine(home, persistence=False)
        for m in manifest:
            engine.register_model(m["name"], os.path.join(MODELS, m["name"] + ".onnx"), m["features"], kind=m["kind"])
        engine.create_ensemble({"name": "market", "members": [m["name"] for m in manifest], "weights": [0.4, 0.4, 0.2]})
        url = f"http://127.0.0.1:{port}/v2/models/market"
        meta = engine.registry.register_remote("triton_market", url, features, output="prediction")
        print(f"# Remote members against a real Triton ({cpu_model()}, {os.cpu_count()} CPUs)\n")
        print(f"registered triton_market@{meta['version']}: {json.dumps(meta['remote'])}")
        engine.create_ensemble({"name": "remote", "members": ["triton_market"]})
        engine.create_ensemble({"name": "desk", "members": ["technical", "triton_market"], "min_members": 1,
                                "latency_budget_ms": BUDGET_MS})
        order = engine.feature_names("remote")
        rows = [[r[f] for f in order] for r in holdout_rows()]

        # 2. Agreement with quorum's own ensemble of the same three models.
        worst = max(abs(engine.predict_row("remote", row).prediction
                        - engine.predict("market", dict(zip(order, row))).prediction) for row in rows)
        print(f"agreement: |triton_market - market| at most {worst:.2e} over {len(rows)} held-out rows")
        if worst > 1e-4:
            problems.append(f"the remote member disagrees with the local ensemble by {worst}")

        # 3. One caller: quorum's remote member against raw tritonclient, interleaved blocks.
        raw = RawTriton(port, order)
        times = interleaved({"quorum remote member (predict_row)": lambda row: engine.predict_row("remote", row),
                             "raw tritonclient.http infer": raw}, rows, args.calls)
        latency_table(times)
        q50, r50 = (statistics.median(s) for s in times.values())
        print(f"\noverhead of the remote path over raw tritonclient: {q50 - r50:+.1f} µs per prediction "
              f"(goal ≤ 20 µs: {'met' if q50 - r50 <= 20 else 'not met'})")

        # 3b. The transport: would gRPC pay? Raw tritonclient over HTTP and over gRPC, same model.
        try:
            grpc = RawTritonGrpc(port + 1, order)
        except ImportError:
            print("\ngRPC: tritonclient[grpc] is not installed here; not measured")
        else:
            times = interleaved({"raw tritonclient.http infer": raw, "raw tritonclient.grpc infer": grpc}, rows,
                                args.calls)
            latency_table(times)
            h50, g50 = (statistics.median(s) for s in times.values())
            print(f"\ngRPC against HTTP/1.1 with binary tensors, clients included: {g50 - h50:+.1f} µs per call")

        # 3c. Hedging in steady state: the member registered with --remote-hedge against without.
        engine.registry.register_remote("triton_hedged", url, features, output="prediction", hedge=True)
        engine.create_ensemble({"name": "hedged", "members": ["triton_hedged"]})
        before = triton_requests(port + 2)
        times = interleaved({"quorum remote member": lambda row: engine.predict_row("remote", row),
                             "quorum remote member, hedged": lambda row: engine.predict_row("hedged", row)},
                            rows, args.calls)
        hedged_requests = triton_requests(port + 2) - before
        latency_table(times)
        print(f"\nTriton requests while both ran {2 * args.calls} predictions: {hedged_requests} "
              f"({hedged_requests - 2 * args.calls:+d}: the hedged member's second attempts)")

        # 4. Many callers: throughput and the requests Triton saw.
        before = triton_requests(port + 2)
        q_rate, q_fail = many_callers(lambda k, row: engine.predict_row("remote", row), rows, args.callers,
                                      args.per_caller)
        q_requests = triton_requests(port + 2) - before
        clients = [RawTriton(port, order) for _ in range(args.callers)]
        before = triton_requests(port + 2)
        r_rate, r_fail = many_callers(lambda k, row: clients[k](row), rows, args.callers, args.per_caller)
        r_requests = triton_requests(port + 2) - before
        predictions = args.callers * args.per_caller
        print(f"\n| {args.callers} callers × {args.per_caller} | predictions/s | Triton requests | failures |\n|---|---|---|---|")
        print(f"| quorum remote member | {q_rate:,.0f} | {q_requests} | {len(q_fail)} |")
        print(f"| raw tritonclient | {r_rate:,.0f} | {r_requests} | {len(r_fail)} |")
        print(f"\nrequests per prediction: {q_requests / predictions:.3f} (goal ≤ 0.25: "
              f"{'met' if q_requests * 4 <= predictions else 'not met'}); throughput against raw tritonclient: "
              f"{q_rate / r_rate:.2f}× (goal ≥ 1: {'met' if q_rate >= r_rate else 'not met'})")
        if q_fail:
            problems.append(f"{len(q_fail)} quorum callers failed: {q_fail[:3]}")

        # 5. kill -9 under load: the desk answers from its local member, degraded, on time.
        def kill():
            os.killpg(triton.pid, signal.SIGKILL)
            triton.wait()

        line, problem = kill_under_load(engine, "desk", rows, kill, 16, BUDGET_MS)
        print(f"kill -9 of Triton under 16 callers: {line}")
        if problem:
            problems.append(problem)

        # 6. Triton comes back on the same port: the member recovers once its breaker lets a trial through.
        triton = subprocess.Popen([args.triton_python, os.path.join(REPO, "benches/triton_peer.py"), str(port)],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_ready(port, "/v2/models/market/ready", seconds=180)
        back = time.perf_counter()
        while time.perf_counter() - back < 30 and engine.predict_row("desk", rows[0]).degraded:
            time.sleep(0.05)
        recovered = not engine.predict_row("desk", rows[0]).degraded
        print(f"Triton restarted: the member answers again after {time.perf_counter() - back:.1f} s "
              f"(the breaker waits 5 s while open)" if recovered else "Triton restarted: the member did not recover in 30 s")
        if not recovered:
            problems.append("the remote member did not recover after Triton came back")
    finally:
        if triton.poll() is None:
            os.killpg(triton.pid, signal.SIGKILL)
        triton.wait()
        subprocess.run(["rm", "-rf", home])
        os.unlink(log.name)
    if problems:
        print("\nPROBLEMS:\n- " + "\n- ".join(problems))
        if args.check:
            sys.exit(1)


if __name__ == "__main__":
    main()
