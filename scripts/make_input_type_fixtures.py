"""Models whose input is not float32, as exporters write them (issue 22), for tests/input_types.rs:

- logreg_float64.onnx: sklearn LogisticRegression through skl2onnx with DoubleTensorType (what
  `to_onnx(model, X[:1])` writes for float64 data), zipmap off; float32 probabilities out.
- mlp_float64.onnx: a sklearn MLPClassifier the same way: the whole graph, and its probabilities, in float64.
- linear_int64.onnx: an int64 input cast to float inside (counts, flags).
- linear_float16.onnx: a float16 input cast to float inside.

Trained on the example data's three features ret_1d, ret_5d, vix (tests/common reads them). Run with
the training venv: .venv-train/bin/python scripts/make_input_type_fixtures.py
"""

from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "exporters"
FEATURES = ["ret_1d", "ret_5d", "vix"]

frame = pd.read_csv(ROOT / "examples" / "data" / "holdout.csv").dropna()
x = frame[FEATURES].to_numpy(np.float64)
y = frame["next_day_up"].to_numpy().astype(int)
OUT.mkdir(parents=True, exist_ok=True)

logreg = LogisticRegression(max_iter=500).fit(x, y)
onx = to_onnx(logreg, x[:1], options={"zipmap": False}, target_opset=17)
onnx.save(onx, OUT / "logreg_float64.onnx")

mlp = MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0).fit(x / [0.02, 0.05, 20.0], y)
onx = to_onnx(mlp, x[:1], options={"zipmap": False}, target_opset=17)
onnx.save(onx, OUT / "mlp_float64.onnx")

W = np.array([[0.8, -0.5], [-1.2, 0.3], [0.04, 0.09]], dtype=np.float32)
B = np.array([0.1, -0.2], dtype=np.float32)


def cast_linear(name: str, elem: int) -> None:
    nodes = [
        helper.make_node("Cast", ["X"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["xf", "W"], ["logits"]),
        helper.make_node("Add", ["logits", "B"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("X", elem, ["N", 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="quorum-fixtures")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, OUT / f"{name}.onnx")


cast_linear("linear_int64", TensorProto.INT64)
cast_linear("linear_float16", TensorProto.FLOAT16)
for f in sorted(OUT.glob("*.onnx")):
    m = onnx.load(f)
    print(f.name, [(i.name, i.type.tensor_type.elem_type) for i in m.graph.input],
          [(o.name, o.type.tensor_type.elem_type) for o in m.graph.output])
