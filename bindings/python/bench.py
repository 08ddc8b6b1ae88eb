"""quorum through Python against the same three models called with Python's onnxruntime plus the
weighted average written in Python, in one run. `make bench-python` (or run with the package installed).

Goals: the binding at least 3x faster for a single row, and no slower for a 1024-row batch;
`await predict_async` at most 2x `predict` (against the hand-written `run_in_executor` too)."""

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy
import onnxruntime

import quorum

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "examples" / "models"
WEIGHTS = {"technical": 0.4, "fundamental": 0.4, "sentiment": 0.2}


def timed(fn, repeat):
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def timed_async(make, repeat):
    """Median of `await make()`, each timed inside one running event loop."""

    async def run():
        for _ in range(50):
            await make()
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            await make()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    return asyncio.run(run())


def main():
    manifest = {m["name"]: m for m in json.loads((MODELS / "manifest.json").read_text())["models"]}
    def make_engine(fusion, native=True, models=MODELS):
        engine = quorum.InferenceEngine(
            tempfile.mkdtemp(), tracking=False, persistence=False, fusion=fusion, native=native
        )
        for name, m in manifest.items():
            engine.register_model(name, models / f"{name}.onnx", m["features"], kind=m["kind"])
        engine.create_ensemble({"name": "market", "members": list(WEIGHTS), "weights": list(WEIGHTS.values())})
        return engine

    # quorum fuses the three members into one ONNX model by default; the unfused engine runs them one
    # by one, as the Python baseline does.
    engine, unfused = make_engine(True), make_engine(False)
    # Fusion across opsets (issue 21): on ONNX Runtime, the example models at their one opset and as
    # three exporters stamp them (examples/models/mixed: 13, 9 and 22), both fused.
    one_opset, mixed = make_engine(True, native=False), make_engine(True, native=False, models=MODELS / "mixed")
    assert mixed.fusion("market")["fused"] and mixed.fusion("market")["opsets"]["ai.onnx"] == 22, mixed.fusion("market")
    # (or, as the example models now do, runs them on native plans with no ONNX Runtime call at all).
    assert engine.fusion("market")["fused"] or engine.fusion("market")["native"], engine.fusion("market")
    names = engine.feature_names("market")

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {n: onnxruntime.InferenceSession(str(MODELS / f"{n}.onnx"), options, providers=["CPUExecutionProvider"]) for n in WEIGHTS}
    inputs = {n: s.get_inputs()[0].name for n, s in sessions.items()}
    columns = {n: [names.index(f) for f in manifest[n]["features"]] for n in WEIGHTS}

    rng = numpy.random.default_rng(7)
    matrix = rng.normal(size=(1024, len(names))).astype(numpy.float32)
    row = {n: float(v) for n, v in zip(names, matrix[0])}
    row_values = [float(v) for v in matrix[0]]

    def raw_single():
        total = 0.0
        for n, s in sessions.items():
            x = numpy.array([[row[f] for f in manifest[n]["features"]]], dtype=numpy.float32)
            total += WEIGHTS[n] * s.run(["probabilities"], {inputs[n]: x})[0][0, 1]
        return total

    def raw_batch():
        total = numpy.zeros(len(matrix), dtype=numpy.float32)
        for n, s in sessions.items():
            x = numpy.ascontiguousarray(matrix[:, columns[n]])
            total += WEIGHTS[n] * s.run(["probabilities"], {inputs[n]: x})[0][:, 1]
        return total

    assert abs(raw_single() - engine.predict("market", row).prediction) < 1e-5
    numpy.testing.assert_allclose(raw_batch(), engine.predict_batch("market", matrix).predictions, atol=1e-5)

    results = {}
    for label, fn, repeat in [
        ("single_row/onnxruntime_python", raw_single, 3000),
        ("single_row/quorum_python", lambda: engine.predict("market", row), 3000),
        ("single_row/quorum_python_row", lambda: engine.predict_row("market", row_values), 3000),
        ("single_row/quorum_python_unfused", lambda: unfused.predict("market", row), 3000),
        ("single_row/fused_one_opset", lambda: one_opset.predict("market", row), 3000),
        ("single_row/fused_mixed_opsets", lambda: mixed.predict("market", row), 3000),
        ("batch_1024/onnxruntime_python", raw_batch, 200),
        ("batch_1024/quorum_python", lambda: engine.predict_batch("market", matrix), 200),
        ("batch_1024/quorum_python_unfused", lambda: unfused.predict_batch("market", matrix), 200),
    ]:
        for _ in range(50):
            fn()
        results[label] = timed(fn, repeat) * 1e6
    results["single_row/quorum_python_async"] = timed_async(lambda: engine.predict_async("market", row), 3000) * 1e6
    # On ONNX Runtime (the fused model) rather than native plans: a run of about 10 µs.
    results["single_row/fused_one_opset_async"] = timed_async(lambda: one_opset.predict_async("market", row), 3000) * 1e6

    def in_executor():
        return asyncio.get_running_loop().run_in_executor(None, engine.predict, "market", row)

    results["single_row/run_in_executor"] = timed_async(in_executor, 3000) * 1e6
    for label, micros in results.items():
        print(f"{label:<32} {micros:10.1f} µs (median)")
    single = results["single_row/onnxruntime_python"] / results["single_row/quorum_python"]
    batch = results["batch_1024/onnxruntime_python"] / results["batch_1024/quorum_python"]
    unfused_single = results["single_row/onnxruntime_python"] / results["single_row/quorum_python_unfused"]
    across = results["single_row/fused_mixed_opsets"] / results["single_row/fused_one_opset"]
    asynchronous = results["single_row/quorum_python_async"] / results["single_row/quorum_python"]
    executor = results["single_row/run_in_executor"] / results["single_row/quorum_python"]
    on_ort = results["single_row/fused_one_opset_async"] / results["single_row/fused_one_opset"]
    print(
        f"await predict_async: {asynchronous:.2f}x predict ({on_ort:.2f}x on ONNX Runtime; goal at most 2x); "
        f"run_in_executor: {executor:.2f}x"
    )
    print(f"fused across opsets vs at one opset (ONNX Runtime, single row): {(across - 1) * 100:+.1f}%")
    print(
        f"single row: quorum {single:.2f}x faster ({unfused_single:.2f}x unfused); 1024 rows: {batch:.2f}x "
        f"(ONNX Runtime {onnxruntime.__version__})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
