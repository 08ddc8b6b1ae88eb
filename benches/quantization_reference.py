"""quorum's INT8 rewrites side by side with onnxruntime.quantization on the same models and data.

For the technical example model and the wide MLP (16 → 256 → 256 → 2), both trained on real S&P 500
data: quorum's `quantize` (dynamic per tensor; static QDQ with each calibrator) against ONNX Runtime's
`quantize_dynamic` and `quantize_static` (QDQ, uint8 activations, int8 weights, MatMul/Gemm, the same
256 calibration rows). Every model is then scored on the held-out 2017–2018 rows (accuracy, agreement
with float32) and timed in one ONNX Runtime (one intra-op thread), interleaved, single row and 64 rows.

usage: make quantization-reference  (python benches/quantization_reference.py QUORUM_BINARY)
"""

import contextlib
import csv
import io
import json
import logging
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
# quorum quantizes weights to 7 bits on x86-64 without VNNI (see quantize::weight_qmax); so must the reference.
REDUCE_RANGE = platform.machine() == "x86_64" and not any(
    f in open("/proc/cpuinfo").read().split() for f in ("avx512_vnni", "avx_vnni")
)
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

ROOT = pathlib.Path(__file__).resolve().parent.parent
QUORUM = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target" / "release" / "quorum")
HOLDOUT = ROOT / "examples" / "data" / "holdout.csv"
MANIFEST = json.loads((ROOT / "examples" / "models" / "manifest.json").read_text())
CALIBRATION_ROWS = 256


def load(features):
    with HOLDOUT.open() as f:
        rows = [r for r in csv.DictReader(f)]
    x = np.array([[float(r[c]) for c in features] for r in rows], dtype=np.float32)
    y = np.array([float(r["next_day_up"]) for r in rows], dtype=np.float32)
    ok = np.isfinite(x).all(axis=1)
    return x[ok], y[ok]


class Reader(CalibrationDataReader):
    def __init__(self, name, rows):
        self.items = iter([{name: rows}])

    def get_next(self):
        return next(self.items, None)


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def scores(s, x):
    out = s.run(["probabilities"], {s.get_inputs()[0].name: x})[0]
    return out[:, 1]


def timings(sessions, x, rounds=40, per_round=25):
    single, batch = x[:1], x[:64]
    samples = {k: ([], []) for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            name = s.get_inputs()[0].name
            for _ in range(per_round):
                t = time.perf_counter()
                s.run(["probabilities"], {name: single})
                samples[k][0].append(time.perf_counter() - t)
            for _ in range(5):
                t = time.perf_counter()
                s.run(["probabilities"], {name: batch})
                samples[k][1].append(time.perf_counter() - t)
    return {k: (np.median(a) * 1e6, np.median(b) * 1e6) for k, (a, b) in samples.items()}


def main():
    logging.getLogger().setLevel(logging.ERROR)
    models = [m for m in MANIFEST["models"] if m["name"] == "technical"] + MANIFEST.get("benchmark_models", [])
    print("| model | method | by | accuracy | Δ vs float | agreement | p50 1 row µs | p50 64 rows µs | bytes |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for m in models:
        features = m["features"]
        x, y = load(features)
        calibration = x[:CALIBRATION_ROWS]
        src = ROOT / "examples" / "models" / f"{m['name']}.onnx"
        with tempfile.TemporaryDirectory() as tmp:
            tmp = pathlib.Path(tmp)
            input_name = session(src).get_inputs()[0].name
            files = {("float32", "-"): src}
            for method in ["int8-dynamic", "int8-static-minmax", "int8-static-percentile", "int8-static-entropy"]:
                out = tmp / f"quorum-{method}.onnx"
                args = [QUORUM, "quantize", "--model", str(src), "--out", str(out), "--method", method]
                if "static" in method:
                    args += ["--data", str(HOLDOUT), "--features", ",".join(features)]
                subprocess.run(args, check=True, capture_output=True)
                files[(method, "quorum")] = out
            out = tmp / "ort-dynamic.onnx"
            quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"], reduce_range=REDUCE_RANGE)
            files[("int8-dynamic", "onnxruntime")] = out
            for method, calibrate in [("minmax", CalibrationMethod.MinMax), ("percentile", CalibrationMethod.Percentile), ("entropy", CalibrationMethod.Entropy)]:
                out = tmp / f"ort-static-{method}.onnx"
                # onnxruntime.quantization prints progress and advice: keep the table clean.
                with contextlib.redirect_stdout(io.StringIO()):
                    quantize_static(
                        str(src),
                        str(out),
                        Reader(input_name, calibration),
                        quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul", "Gemm"],
                        calibrate_method=calibrate,
                        reduce_range=REDUCE_RANGE,
                    )
                files[(f"int8-static-{method}", "onnxruntime")] = out
            sessions = {k: session(p) for k, p in files.items()}
            reference = scores(sessions[("float32", "-")], x)
            times = timings(sessions, x)
            base_accuracy = float(((reference >= 0.5) == y).mean())
            for (method, by), s in sessions.items():
                p = scores(s, x)
                accuracy = float(((p >= 0.5) == y).mean())
                agreement = float(((p >= 0.5) == (reference >= 0.5)).mean())
                t1, t64 = times[(method, by)]
                size = pathlib.Path(files[(method, by)]).stat().st_size
                print(f"| {m['name']} | {method} | {by} | {accuracy:.2%} | {100 * (accuracy - base_accuracy):+.2f} pt | {agreement:.2%} | {t1:.1f} | {t64:.1f} | {size} |")


if __name__ == "__main__":
    main()
