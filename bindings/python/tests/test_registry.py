"""Registry, Optimizer and InferenceEngine as three types over one home, in one process."""

import http.server
import json
import math
import threading
from pathlib import Path
from typing import Any, Dict, List

import pytest

import quorum
from conftest import HOLDOUT, MODELS, manifest


def test_a_standalone_registry_and_an_engine_share_one_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registry = quorum.Registry(home)
    m = manifest()[2]
    meta = registry.register(m["name"], MODELS / f"{m['name']}.onnx", m["features"], kind=m["kind"])
    assert meta["version"] == 1
    engine = quorum.InferenceEngine(home, persistence=False)
    # The engine sees what the standalone registry wrote, and the reverse.
    assert [s["name"] for s in engine.registry.list()] == [m["name"]]
    engine.register_model(m["name"], MODELS / f"{m['name']}.onnx", m["features"], kind=m["kind"])
    assert registry.versions(m["name"]) == [1, 2]
    assert registry.show(m["name"], 2)["sha256"] == registry.verify(m["name"], 2)["sha256"]
    assert engine.model(m["name"])["version"] == registry.show(m["name"])["version"]


def test_set_default_through_the_engine_registry_hot_swaps_loaded_ensembles(engine: quorum.InferenceEngine) -> None:
    t = manifest()[0]
    engine.registry.register(t["name"], MODELS / f"{t['name']}.onnx", t["features"], kind=t["kind"])
    assert engine.registry.set_default(t["name"], 2) == ["market"]
    contributions = engine.predict_row("market", [0.0] * len(engine.feature_names("market"))).model_contributions
    assert contributions[t["name"]]["version"] == 2


def test_a_registry_verify_reports_a_tampered_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registry = quorum.Registry(home)
    m = manifest()[2]
    registry.register(m["name"], MODELS / f"{m['name']}.onnx", m["features"])
    model_file = home / "models" / m["name"] / "1" / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[-1] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(quorum.ChecksumMismatchError):
        registry.verify(m["name"])


def test_the_optimizer_quantizes_one_file_and_benchmarks_a_registered_model(engine: quorum.InferenceEngine, tmp_path: Path) -> None:
    optimizer = quorum.Optimizer(engine)
    out = tmp_path / "technical-int8.onnx"
    report = optimizer.quantize(MODELS / "technical.onnx", out, "int8-dynamic")
    assert out.stat().st_size == report["bytes"] > 0
    assert any(n["rewritten"] for n in report["nodes"])
    with pytest.raises(quorum.ConfigError):
        optimizer.quantize(MODELS / "technical.onnx", out, "int8-static-minmax")
    with pytest.raises(quorum.ConfigError):
        optimizer.quantize(MODELS / "technical.onnx", out, "int4")
    bench = engine.optimizer.benchmark("sentiment", HOLDOUT, "next_day_up")
    assert len(bench["latency"]) == 4 and bench["accuracy"] > 0.4


class _Oip(http.server.BaseHTTPRequestHandler):
    """A one-model Open Inference Protocol server: `far`, `y = sigmoid(0.01 * sum(x))`."""

    width = 0
    seen_tokens: List[str] = []

    def _answer(self, status: int, body: Dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.seen_tokens.append(self.headers.get("authorization", ""))
        if self.path == "/v2/models/far":
            shape = [-1, self.width]
            inputs = [{"name": "x", "datatype": "FP32", "shape": shape}]
            self._answer(200, {"name": "far", "inputs": inputs, "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]})
        else:
            self._answer(200, {"name": "py", "version": "1", "extensions": []})

    def do_POST(self) -> None:
        self.seen_tokens.append(self.headers.get("authorization", ""))
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        x = request["inputs"][0]
        rows = x["shape"][0]
        data = x["data"]
        y = [1 / (1 + math.exp(-0.01 * sum(data[r * self.width : (r + 1) * self.width]))) for r in range(rows)]
        self._answer(200, {"model_name": "far", "outputs": [{"name": "y", "datatype": "FP64", "shape": [rows, 1], "data": y}]})

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_remote_model_registers_by_url_and_answers_in_an_ensemble(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = manifest()[0]
    _Oip.width = len(m["features"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Oip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v2/models/far"
    try:
        monkeypatch.setenv("QUORUM_PY_TEST_TOKEN", "py-secret-1")
        engine = quorum.InferenceEngine(tmp_path / "home", persistence=False)
        with pytest.raises(quorum.JSONError):
            engine.registry.register_remote("far", url, m["features"], token=("not", "stored"))  # type: ignore[call-arg]
        meta = engine.registry.register_remote(
            "far", url, m["features"], token_env="QUORUM_PY_TEST_TOKEN", output="y", kind="technical", hedge_url=url
        )
        assert meta["remote"]["url"] == url and meta["remote"]["token_env"] == "QUORUM_PY_TEST_TOKEN"
        assert meta["remote"].get("hedge") is True and meta["remote"].get("hedge_url") == url
        assert "py-secret-1" not in json.dumps(meta)
        engine.register_model(m["name"], MODELS / f"{m['name']}.onnx", m["features"], kind=m["kind"])
        engine.create_ensemble({"name": "desk", "members": [m["name"], "far"]})
        row = [0.5] * len(m["features"])
        p = engine.predict_row("desk", row)
        assert not p.degraded
        far = p.model_contributions["far"]["prediction"]
        assert far is not None and abs(far - 1 / (1 + math.exp(-0.005 * len(row)))) < 1e-6
        assert engine.replicas("far")[0]["executor"] == {"kind": "remote", "url": url}
        assert set(_Oip.seen_tokens) == {"Bearer py-secret-1"}
    finally:
        server.shutdown()
    with pytest.raises(quorum.ModelLoadError):
        engine.registry.register_remote("gone", url, m["features"])
