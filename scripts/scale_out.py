#!/usr/bin/env python3
"""Three `quorum serve` replicas behind haproxy, one PostgreSQL: the scale-out proof.

1. The held-out data is replayed through the balancer (predictions and outcomes land on different
   replicas). Every replica must end with the same weights, to the last bit, as one embedded engine
   (a fourth server on SQLite) fed the same outcomes in the outcome log's order, and the same
   tracked metrics.
2. Again with concurrent clients, `kill -9` of one replica in the middle and its restart: no outcome
   lost or applied twice, the restarted replica catches up to the same weights, and the failed
   requests are reported (they must be those in flight on the killed process).

Only 127.0.0.1 is used; every wait is bounded; everything started is stopped. Needs psql and haproxy.
Usage: scale_out.py --quorum target/debug/quorum [--postgres postgres://postgres@127.0.0.1:5432]
"""
import argparse
import concurrent.futures
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "scale-out-proof-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, method, path, body=None, timeout=10):
    """(status, JSON body); status 0 for a connection failure."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    request.add_header("authorization", f"Bearer {TOKEN}")
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None
    except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError):
        return 0, None


def psql(url, sql):
    out = subprocess.run(["psql", url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"psql: {out.stderr.strip()}")
    return out.stdout.strip()


def wait_until(what, seconds, check):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise SystemExit(f"FAIL: timed out waiting for {what}")


class Replica:
    def __init__(self, args, work, home, state, name, port=None):
        self.args, self.work, self.home, self.state, self.name = args, work, home, state, name
        self.port = port or free_port()
        self.process = None

    def start(self):
        log = open(os.path.join(self.work, f"{self.name}.log"), "a")
        self.process = subprocess.Popen(
            [self.args.quorum, "--home", self.home, "--state", self.state, "serve", "--listen",
             f"127.0.0.1:{self.port}", "--tokens", os.path.join(self.work, "tokens"), "--config",
             os.path.join(self.work, "quorum.toml")],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_until(f"{self.name} ready", 60, lambda: self.ready() or self.process.poll() is not None)
        if self.process.poll() is not None:
            raise SystemExit(f"FAIL: {self.name} exited; see {self.work}/{self.name}.log")

    def ready(self):
        return http(self.port, "GET", "/v2/health/ready", timeout=1)[0] == 200

    def stop(self, sig=signal.SIGTERM):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def ensemble(self):
        status, body = http(self.port, "GET", "/api/v1/ml/ensemble/market")
        assert status == 200, (self.name, status, body)
        return body


def holdout():
    with open(os.path.join(ROOT, "examples/data/holdout.csv")) as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        features = {k: float(v) for k, v in r.items() if k not in ("date", "next_day_up")}
        if all(abs(v) != float("inf") and v == v for v in features.values()):
            out.append((features, float(r["next_day_up"])))
    return out


def predict(port, features):
    return http(port, "POST", "/api/v1/ml/ensemble/market/predict", {"features": {"market_data": features}})


def outcome(port, request_id, value):
    return http(port, "POST", "/api/v1/ml/outcomes", {"request_id": request_id, "outcome": value})


def comparable(ensemble):
    """Weights (exact: f32 printed shortest) and the tracked all-time metrics."""
    metrics = ensemble.get("metrics") or {}
    return {"weights": ensemble["weights"], "epoch": ensemble["weights_epoch"],
            "all_time": metrics.get("metrics", {}).get("all_time")}


def single_engine_weights(args, work, home, url, features_by_id):
    """A fourth server on SQLite over a copy of the home, fed the log's outcomes in order."""
    single_home = tempfile.mkdtemp(prefix="single-", dir=work)
    shutil.copytree(home, single_home, ignore=shutil.ignore_patterns("state.sqlite*"), dirs_exist_ok=True)
    single = Replica(args, work, single_home, "sqlite:" + os.path.join(single_home, "state.sqlite"), "single")
    single.start()
    try:
        log = psql(url, "SELECT request_id || ' ' || outcome FROM outcome_log ORDER BY position").splitlines()
        for line in log:
            request_id, value = line.split()
            status, p = predict(single.port, features_by_id[int(request_id)])
            assert status == 200, (status, p)
            status, body = outcome(single.port, p["request_id"], float(value))
            assert status == 200, (status, body)
        return comparable(single.ensemble()), len(log)
    finally:
        single.stop()


def check_same(replicas, reference, label):
    """Weights: bit-equal everywhere. Tracked metrics: equal among the replicas (they score the same
    logged predictions); against the single engine the counts and every decision-based metric are
    equal, while Brier and log loss may differ a little: a replica's own prediction used the weights
    it had applied when it predicted, which can trail the log by the outcomes still in flight."""
    seen = {r.name: comparable(r.ensemble()) for r in replicas}
    first = next(iter(seen.values()))
    for name, state in seen.items():
        if state["weights"] != reference["weights"]:
            raise SystemExit(f"FAIL ({label}): {name} weights {state['weights']} != single engine {reference['weights']}")
        if state["all_time"] != first["all_time"]:
            raise SystemExit(f"FAIL ({label}): {name} metrics {state['all_time']} != {first['all_time']}")
    mine, single = first["all_time"], reference["all_time"]
    if mine["count"] != single["count"]:
        raise SystemExit(f"FAIL ({label}): {mine['count']} outcomes tracked, the single engine {single['count']}")
    drift = {k: abs(mine[k] - single[k]) for k in ("accuracy", "brier", "log_loss") if mine.get(k) is not None}
    if drift.get("brier", 0) > 0.01:
        raise SystemExit(f"FAIL ({label}): Brier {mine['brier']} vs single engine {single['brier']}")
    print(f"{label}: {len(replicas)} replicas and the single engine agree bit for bit on weights "
          f"{reference['weights']['all']} (epoch {reference['epoch']}); replicas' metrics identical "
          f"({json.dumps(mine)}); |replica - single engine|: {json.dumps(drift)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quorum", required=True)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4, help="passes over the second half in phase 2")
    args = parser.parse_args()
    args.quorum = os.path.abspath(args.quorum)
    if shutil.which("haproxy") is None:
        raise SystemExit("FAIL: haproxy is not installed (make scale-tools)")
    database = f"quorum_scale_{os.getpid()}"
    psql(f"{args.postgres}/test", f"CREATE DATABASE {database}")
    url = f"{args.postgres}/{database}"
    work = tempfile.mkdtemp(prefix="quorum-scale-")
    home = os.path.join(work, "home")
    started = []
    haproxy = None
    try:
        with open(os.path.join(work, "tokens"), "w") as f:
            f.write(f"admin {TOKEN}\n")
        with open(os.path.join(work, "quorum.toml"), "w") as f:
            f.write("[engine]\ninference_log = { flush_ms = 5 }\n[limits]\nshutdown_drain_ms = 300\n"
                    "[alerts]\nenabled = false\n")
        manifest = json.load(open(os.path.join(ROOT, "examples/models/manifest.json")))
        for m in manifest["models"]:
            subprocess.run([args.quorum, "--home", home, "--state", url, "models", "register", m["name"], "--file",
                            os.path.join(ROOT, "examples/models", m["name"] + ".onnx"), "--features",
                            ",".join(m["features"]), "--kind", m["kind"]], check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL)
        subprocess.run([args.quorum, "--home", home, "--state", url, "ensemble", "create", "market", "--members",
                        "technical,fundamental,sentiment", "--strategy", "boa"], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)

        replicas = [Replica(args, work, home, url, f"replica{i}") for i in (1, 2, 3)]
        for r in replicas:
            r.start()
            started.append(r)
        balancer = free_port()
        servers = "\n".join(f"  server {r.name} 127.0.0.1:{r.port} check" for r in replicas)
        with open(os.path.join(work, "haproxy.cfg"), "w") as f:
            f.write(f"""global
  maxconn 512
defaults
  mode http
  timeout connect 1s
  timeout client 20s
  timeout server 20s
  retries 3
  option redispatch
  # Only a request that never reached a replica is retried: an outcome must not be sent twice.
  retry-on conn-failure
frontend quorum
  bind 127.0.0.1:{balancer}
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /v2/health/ready
  http-check expect status 200
  default-server inter 100ms fall 1 rise 2
{servers}
""")
        haproxy = subprocess.Popen(["haproxy", "-f", os.path.join(work, "haproxy.cfg"), "-db"],
                                   stdout=open(os.path.join(work, "haproxy.log"), "w"), stderr=subprocess.STDOUT)
        wait_until("haproxy", 20, lambda: http(balancer, "GET", "/v2/health/ready", timeout=1)[0] == 200)

        data = holdout()
        half = len(data) // 2
        features_by_id = {}

        # Phase 1: the first half, one client, through the balancer.
        instances = {}
        for features, value in data[:half]:
            status, p = predict(balancer, features)
            assert status == 200, (status, p)
            features_by_id[p["request_id"]] = features
            instances[p["request_id"] >> 40] = instances.get(p["request_id"] >> 40, 0) + 1
            status, body = outcome(balancer, p["request_id"], value)
            assert status == 200, (status, body)
        head = int(psql(url, "SELECT max(position) FROM outcome_log"))
        for r in replicas:
            wait_until(f"{r.name} to apply the log", 30, lambda r=r: r.ensemble()["weights_epoch"] >= head)
        print(f"phase 1: {half} predictions and outcomes through haproxy; predictions per replica instance {instances}")
        reference, applied = single_engine_weights(args, work, home, url, features_by_id)
        assert applied == half, (applied, half)
        check_same(replicas, reference, "phase 1")

        # Phase 2: concurrent clients; replica 2 is killed (-9) a third of the way in, restarted at two thirds.
        work_items = [(f, v) for _ in range(args.rounds) for f, v in data[half:]]
        lock = threading.Lock()
        failed = {"predict": 0, "outcome": 0}
        unjoinable, acknowledged = 0, set()
        done = [0]

        def client(item):
            nonlocal unjoinable
            features, value = item
            status, p = predict(balancer, features)
            with lock:
                done[0] += 1
            if status != 200:
                with lock:
                    failed["predict"] += 1
                return
            with lock:
                features_by_id[p["request_id"]] = features
            for attempt in range(6):
                status, body = outcome(balancer, p["request_id"], value)
                if status == 200:
                    with lock:
                        acknowledged.add(p["request_id"])
                    return
                message = (body or {}).get("error", {}).get("message", "") if isinstance(body, dict) else ""
                if status in (404, 422) and "already recorded" in json.dumps(body):
                    with lock:
                        acknowledged.add(p["request_id"])  # an earlier attempt was recorded: once, not twice
                    return
                if status in (404, 422) and "unknown request id" in json.dumps(body):
                    with lock:
                        unjoinable += 1  # its prediction's log row died with the killed replica
                    return
                with lock:
                    failed["outcome"] += 1
                time.sleep(0.1)
            raise SystemExit(f"FAIL: outcome for {p['request_id']} never recorded: {status} {body} {message}")

        killed = replicas[1]
        kill_at, restart_at = len(work_items) // 3, 2 * len(work_items) // 3
        restarted = threading.Event()

        def chaos():
            wait_until("a third of phase 2", 300, lambda: done[0] >= kill_at)
            killed.process.send_signal(signal.SIGKILL)
            killed.process.wait()
            print(f"phase 2: killed {killed.name} (-9) after {done[0]} requests")
            wait_until("two thirds of phase 2", 300, lambda: done[0] >= restart_at)
            t = time.time()
            killed.start()
            print(f"phase 2: restarted {killed.name}; ready (caught up) after {time.time() - t:.2f} s")
            restarted.set()

        chaos_thread = threading.Thread(target=chaos, daemon=True)
        chaos_thread.start()
        started_at = time.time()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(client, work_items))
        chaos_thread.join(timeout=120)
        assert restarted.is_set(), "the killed replica was not restarted"
        elapsed = time.time() - started_at

        logged = set(int(x) for x in psql(url, "SELECT request_id FROM outcome_log").split())
        phase2_logged = logged - set(list(features_by_id)[:half])
        lost = acknowledged - logged
        extra = phase2_logged - acknowledged
        print(f"phase 2: {len(work_items)} predictions by {args.clients} clients in {elapsed:.1f} s; "
              f"failed requests seen by clients: {failed['predict']} predictions, {failed['outcome']} outcome attempts "
              f"(retried); outcomes refused because their prediction died unlogged with the killed replica: {unjoinable}")
        if lost or extra:
            raise SystemExit(f"FAIL: outcomes acknowledged but not in the log: {sorted(lost)[:5]}; "
                             f"in the log but never acknowledged: {sorted(extra)[:5]}")
        head = int(psql(url, "SELECT max(position) FROM outcome_log"))
        count = int(psql(url, "SELECT count(*) FROM outcome_log"))
        assert head == count, (head, count)
        for r in replicas:
            wait_until(f"{r.name} to apply the log", 60, lambda r=r: r.ensemble()["weights_epoch"] >= head)
        reference, applied = single_engine_weights(args, work, home, url, features_by_id)
        assert applied == count
        print(f"phase 2: outcome log holds {count} outcomes, each once; none acknowledged was lost")
        for r in replicas:
            status, body = http(r.port, "GET", "/api/v1/ml/status")
            assert status == 200, (r.name, status)
            state = body["state"]
            assert state["url"].startswith("postgres://"), state
            assert state["shared"]["caught_up"] and state["shared"]["applied_position"] == head, (r.name, state)
            print(f"  {r.name}: instance {state['shared']['instance']}, applied {state['shared']['applied']} "
                  f"(skipped {state['shared']['skipped']}), inference log written {state['inference_log']['written']}, "
                  f"dropped {state['inference_log']['dropped']}")
        check_same(replicas, reference, "phase 2")
        if failed["predict"] > args.clients:
            raise SystemExit(f"FAIL: {failed['predict']} failed predictions: more than the {args.clients} that can be "
                             "in flight on the killed replica")
        print("OK")
    finally:
        if haproxy:
            haproxy.terminate()
            haproxy.wait()
        for r in started:
            r.stop()
        try:
            psql(f"{args.postgres}/test", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        except RuntimeError as e:
            print(f"warning: {e}", file=sys.stderr)
        if os.environ.get("KEEP") is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
