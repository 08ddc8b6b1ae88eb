"""Load on `quorum serve` with oha (built from crates.io by `make load-serve`), against the FastAPI peer
(benches/fastapi_peer.py) at the same concurrency, in one run on this machine: throughput, p50/p95/p99
and errors at 1, 64, 1,000 and 10,000 keep-alive connections for REST predict and v2 infer, and the
server's own overhead per request (its Server-Timing `app` time minus the engine's time). Prints a
markdown table. Everything goes to 127.0.0.1, each run is bounded in time, and every process it
starts is stopped at the end.

    python benches/serve_load.py --quorum target/release/quorum --oha .tools/bin/oha [--seconds 5]
"""

import argparse
import csv
import http.client
import json
import math
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port(span=1):
    """A port (and the `span - 1` after it) nothing listens on, below the ephemeral range, so that
    the load generator's own connections cannot take it meanwhile."""
    for port in range(20000 + (os.getpid() % 500) * 20, 32000, 7):
        try:
            for p in range(port, port + span):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise SystemExit("no free port")


def wait_ready(port, path, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status in (200, 405):  # 405: a POST-only route answers
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"nothing answered on port {port}")


def holdout_rows():
    """The held-out rows whose features are all finite (two 2018 rows have an infinite feature)."""
    rows = []
    with open(os.path.join(REPO, "examples/data/holdout.csv")) as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if k not in ("date", "next_day_up")}
            if all(math.isfinite(v) for v in values.values()):
                rows.append(values)
    return rows


def oha(binary, url, bodies, concurrency, seconds, rate=None, headers=()):
    """oha sending the lines of `bodies` (one request body per line) over `concurrency` connections,
    as fast as answers come back (closed loop) or at `rate` requests/s in all (open loop)."""
    args = [binary, "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(concurrency),
            "-m", "POST", "-T", "application/json", "-Z", bodies, "--wait-ongoing-requests-after-deadline"]
    if rate:
        args += ["-q", str(rate)]
    for h in headers:
        args += ["-H", h]
    try:
        out = subprocess.run(args + [url], capture_output=True, text=True, timeout=seconds * 6 + 120)
    except subprocess.TimeoutExpired:
        return {"error": f"oha did not finish within {seconds * 6 + 120} s (requests still unanswered)"}
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-300:]}
    data = json.loads(out.stdout)
    codes = data.get("statusCodeDistribution", {})
    errors = data.get("errorDistribution", {})
    lat = data.get("latencyPercentiles", {})
    return {
        "rps": data["summary"].get("requestsPerSec") or 0.0,
        "p50": (lat.get("p50") or 0) * 1e3,
        "p95": (lat.get("p95") or 0) * 1e3,
        "p99": (lat.get("p99") or 0) * 1e3,
        "ok": codes.get("200", 0),
        "failed": sum(v for k, v in codes.items() if k != "200") + sum(errors.values()),
        "errors": {**errors, **{f"HTTP {k}": v for k, v in codes.items() if k != "200"}},
    }


def overhead_us(port, body, n=3000):
    """Server time (Server-Timing app) minus engine time, per request, over one keep-alive connection."""
    c = http.client.HTTPConnection("127.0.0.1", port)
    samples, client = [], []
    for i in range(n):
        t = time.perf_counter()
        c.request("POST", "/api/v1/ml/ensemble/market/predict", body, {"content-type": "application/json"})
        r = c.getresponse()
        answer = json.loads(r.read())
        client.append((time.perf_counter() - t) * 1e6)
        app_ms = float(r.getheader("server-timing").split("dur=")[1])
        if i >= 200:
            samples.append((app_ms - answer["engine_latency_ms"]) * 1e3)
    return statistics.median(samples), sorted(samples)[int(len(samples) * 0.99)], statistics.median(client)


def fmt(r):
    if "error" in r:
        return f"| failed to run: {r['error']} | | | | |"
    return f"| {r['rps']:,.0f} | {r['p50']:.3f} | {r['p95']:.3f} | {r['p99']:.3f} | {r['failed']} |"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quorum", required=True)
    parser.add_argument("--oha", required=True)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--concurrency", default="1,64,1000,10000")
    parser.add_argument("--open", default="10000@5000,10000@10000",
                        help="open-loop cells CONNECTIONS@RATE: that many connections sending RATE requests/s in all")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--triton-python", help="a Python with nvidia-pytriton: also load a real Triton peer")
    parser.add_argument("--check", action="store_true", help="exit 1 if any quorum request failed (503 load shedding at 10,000 unpaced connections excepted)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    levels = [int(c) for c in args.concurrency.split(",")]

    home = tempfile.mkdtemp(prefix="quorum-load-")
    q = [args.quorum, "--home", home]
    manifest = json.load(open(os.path.join(REPO, "examples/models/manifest.json")))
    for m in manifest["models"]:
        subprocess.run(q + ["models", "register", m["name"], "--file", os.path.join(REPO, "examples/models", m["name"] + ".onnx"),
                            "--features", ",".join(m["features"]), "--kind", m["kind"]], check=True, capture_output=True)
    subprocess.run(q + ["ensemble", "create", "market", "--members", "technical,fundamental,sentiment",
                        "--weights", "0.4,0.4,0.2"], check=True, capture_output=True)
    rows = holdout_rows()
    rest_bodies = os.path.join(home, "rest.jsonl")
    v2_bodies = os.path.join(home, "v2.jsonl")
    with open(rest_bodies, "w") as f:
        for row in rows:
            f.write(json.dumps({"features": {"market_data": row}}) + "\n")
    with open(v2_bodies, "w") as f:
        for row in rows:
            # [1, 1]: the shape Triton's batching models take; quorum takes [rows] and [rows, 1].
            inputs = [{"name": k, "shape": [1, 1], "datatype": "FP32", "data": [v]} for k, v in row.items()]
            f.write(json.dumps({"inputs": inputs}) + "\n")
    rest = json.dumps({"features": {"market_data": rows[0]}})

    port = free_port()
    server = subprocess.Popen(q + ["serve", "--listen", f"127.0.0.1:{port}", "--log-level", "warn"])
    peer = triton = None
    try:
        wait_ready(port, "/v2/health/ready")
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        print(f"CPU: {cpu}, {os.cpu_count()} cores; oha on the same machine; {args.seconds} s per cell; "
              f"open files {hard}")
        median, p99, client = overhead_us(port, rest)
        print(f"server overhead per request (Server-Timing app − engine_latency_ms, one keep-alive client): "
              f"median {median:.1f} µs, p99 {p99:.1f} µs; client round trip median {client:.1f} µs\n")
        results = {}
        open_cells = [tuple(int(x) for x in cell.split("@")) for cell in args.open.split(",") if cell]
        for c in levels:
            results[("quorum REST predict", c)] = oha(args.oha, f"http://127.0.0.1:{port}/api/v1/ml/ensemble/market/predict", rest_bodies, c, args.seconds)
            results[("quorum v2 infer", c)] = oha(args.oha, f"http://127.0.0.1:{port}/v2/models/market/infer", v2_bodies, c, args.seconds)
        for c, rate in open_cells:
            results[(f"quorum REST predict at {rate:,}/s", c)] = oha(
                args.oha, f"http://127.0.0.1:{port}/api/v1/ml/ensemble/market/predict", rest_bodies, c, args.seconds, rate)
        if not args.no_peer:
            peer_port = free_port()
            python = sys.executable
            peer = subprocess.Popen([python, os.path.join(REPO, "benches/fastapi_peer.py"), str(peer_port)])
            wait_ready(peer_port, "/api/v1/ml/ensemble/market/predict")
            for c in levels:
                results[("FastAPI + onnxruntime", c)] = oha(args.oha, f"http://127.0.0.1:{peer_port}/api/v1/ml/ensemble/market/predict", rest_bodies, c, args.seconds)
        if args.triton_python:
            triton_port = free_port(span=3)
            triton = subprocess.Popen([args.triton_python, os.path.join(REPO, "benches/triton_peer.py"), str(triton_port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_ready(triton_port, "/v2/models/market/ready", seconds=180)
            for c in levels:
                results[("Triton (Python backend) v2 infer", c)] = oha(args.oha, f"http://127.0.0.1:{triton_port}/v2/models/market/infer", v2_bodies, c, args.seconds)
        print("| target | connections | requests/s | p50 ms | p95 ms | p99 ms | failed |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for (name, c), r in results.items():
            print(f"| {name} | {c:,} {fmt(r)}")
        for (name, c), r in results.items():
            if r.get("errors"):
                print(f"{name} at {c}: {r['errors']}")
        def refused(k, r):
            """Failures that count against quorum. An unpaced 10,000-connection cell offers more than
            a 2-core machine serves within the admission queue's wait (1 s): the 503 `overloaded`
            answers there are the designed load shedding, reported in the table; anything else fails."""
            if "error" in r:
                return True
            shed = r.get("errors", {}).get("HTTP 503", 0) if k[1] >= 10_000 and " at " not in k[0] else 0
            return r["failed"] - shed > 0
        failed = [(k, r) for k, r in results.items() if k[0].startswith("quorum") and refused(k, r)]
        shedding = [(k, r["errors"]["HTTP 503"]) for k, r in results.items()
                    if k[0].startswith("quorum") and r.get("errors", {}).get("HTTP 503")]
        if shedding:
            print(f"503 overloaded (load shed by the admission queue): {shedding}")
        if not args.no_peer:
            for c in levels:
                a, b = results[("quorum REST predict", c)], results[("FastAPI + onnxruntime", c)]
                if "rps" in a and "rps" in b and b["rps"]:
                    print(f"at {c} connections quorum answers {a['rps'] / b['rps']:.1f}× the FastAPI peer's requests/s")
        if args.check and failed:
            raise SystemExit(f"quorum requests failed: {failed}")
    finally:
        for p in (server, peer, triton):
            if p is not None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        subprocess.run(["rm", "-rf", home])


if __name__ == "__main__":
    main()
