"""A wide random MLP for memory measurements (`make replica-memory`): 64 → 4096 → 4096 → 2, about
68 MB of float32 weights, so one replica's memory is dominated by its weights.

usage: make_wide_model.py OUT.onnx
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IN, HIDDEN = 64, 4096
rng = np.random.default_rng(7)
w1 = (rng.standard_normal((IN, HIDDEN)) / np.sqrt(IN)).astype(np.float32)
w2 = (rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32)
w3 = (rng.standard_normal((HIDDEN, 2)) / np.sqrt(HIDDEN)).astype(np.float32)
nodes = [
    helper.make_node("MatMul", ["x", "w1"], ["h1"]),
    helper.make_node("Relu", ["h1"], ["a1"]),
    helper.make_node("MatMul", ["a1", "w2"], ["h2"]),
    helper.make_node("Relu", ["h2"], ["a2"]),
    helper.make_node("MatMul", ["a2", "w3"], ["logits"]),
    helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
]
graph = helper.make_graph(
    nodes,
    "wide",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", IN])],
    [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
    initializer=[numpy_helper.from_array(w, name) for w, name in [(w1, "w1"), (w2, "w2"), (w3, "w3")]],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="quorum-tools")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
print(f"wrote {sys.argv[1]}")
