"""Models with several inputs, as exporters write them (issue 22), for tests/input_map.rs:

- frame_pipeline.onnx: a sklearn StandardScaler + LogisticRegression pipeline fitted on a pandas
  DataFrame and exported with skl2onnx's defaults, `to_onnx(pipe, frame[:1])`: one [N, 1] input per
  column named as the column (ret_1d and ret_5d float64, vix int64), a FeatureVectorizer joining
  them, and a ZipMap output. frame_pipeline_plain.onnx is the same without ZipMap, the reference.
- grouped_inputs.onnx: a hand-built float32 graph (opset 17, as the example models) with inputs x1 [N, 2] (ret_1d, ret_5d) and
  x2 [N] (vix), named unlike the features, so registration needs --inputs 'x1=ret_1d,ret_5d;x2=vix'.
- string_input.onnx: a float input beside a string one (a sector code through a LabelEncoder),
  which quorum cannot feed.

Trained on the example data (tests/common reads it). Run with the training venv:
.venv-train/bin/python scripts/make_input_map_fixtures.py
"""

from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "exporters"
OUT.mkdir(parents=True, exist_ok=True)

frame = pd.read_csv(ROOT / "examples" / "data" / "holdout.csv").dropna()
x = pd.DataFrame({
    "ret_1d": frame["ret_1d"].astype(np.float64),
    "ret_5d": frame["ret_5d"].astype(np.float64),
    "vix": frame["vix"].round().astype(np.int64),
})
y = frame["next_day_up"].to_numpy().astype(int)
pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
onnx.save(to_onnx(pipe, x[:1]), OUT / "frame_pipeline.onnx")
onnx.save(to_onnx(pipe, x[:1], options={"zipmap": False}), OUT / "frame_pipeline_plain.onnx")

W = np.array([[0.8, -0.5], [-1.2, 0.3], [0.04, 0.09]], dtype=np.float32)
B = np.array([0.1, -0.2], dtype=np.float32)
nodes = [
    helper.make_node("Unsqueeze", ["x2", "one"], ["x2col"]),
    helper.make_node("Concat", ["x1", "x2col"], ["x"], axis=1),
    helper.make_node("MatMul", ["x", "W"], ["logits"]),
    helper.make_node("Add", ["logits", "B"], ["scores"]),
    helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
]
graph = helper.make_graph(
    nodes,
    "grouped_inputs",
    [
        helper.make_tensor_value_info("x1", TensorProto.FLOAT, ["N", 2]),
        helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N"]),
    ],
    [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
    [
        numpy_helper.from_array(W, "W"),
        numpy_helper.from_array(B, "B"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
    ],
)
m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="quorum-fixtures")
m.ir_version = 8
onnx.checker.check_model(m)
onnx.save(m, OUT / "grouped_inputs.onnx")

nodes = [
    helper.make_node("LabelEncoder", ["sector"], ["code"], domain="ai.onnx.ml",
                     keys_strings=["tech", "energy"], values_floats=[1.0, -1.0], default_float=0.0),
    helper.make_node("Concat", ["ret_1d", "code"], ["x"], axis=1),
    helper.make_node("MatMul", ["x", "W"], ["logits"]),
    helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
]
graph = helper.make_graph(
    nodes,
    "string_input",
    [
        helper.make_tensor_value_info("ret_1d", TensorProto.FLOAT, ["N", 1]),
        helper.make_tensor_value_info("sector", TensorProto.STRING, ["N", 1]),
    ],
    [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
    [numpy_helper.from_array(W[:2], "W")],
)
m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 2)],
                      producer_name="quorum-fixtures")
m.ir_version = 8
onnx.checker.check_model(m)
onnx.save(m, OUT / "string_input.onnx")

for name in ["frame_pipeline", "frame_pipeline_plain", "grouped_inputs", "string_input"]:
    m = onnx.load(OUT / f"{name}.onnx")
    print(name, [(i.name, i.type.tensor_type.elem_type) for i in m.graph.input], [o.name for o in m.graph.output])
