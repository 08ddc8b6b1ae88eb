"""Models whose batch dimension is not free, as exporters write them (issue 22), for tests/fixed_batch.rs:

- fixed_batch1.onnx: input [1, 3], as torch.onnx.export writes without dynamic_axes;
- fixed_batch4.onnx: input [4, 3];
- reshape_batch1.onnx: a free input dimension, but a Reshape to [1, 3] inside, so it fails on two rows.

Each is a softmax over a 3 -> 2 linear layer with output "probabilities". Run with the training venv:
    .venv-train/bin/python scripts/make_fixed_batch_fixtures.py
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "exporters"
W = np.array([[0.8, -0.5], [-1.2, 0.3], [0.4, 0.9]], dtype=np.float32)
B = np.array([0.1, -0.2], dtype=np.float32)


def model(name: str, batch, reshape: bool) -> None:
    nodes = []
    source = "X"
    initializers = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")]
    if reshape:
        initializers.append(numpy_helper.from_array(np.array([1, 3], dtype=np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["X", "shape"], ["flat"]))
        source = "flat"
    nodes += [
        helper.make_node("MatMul", [source, "W"], ["logits"]),
        helper.make_node("Add", ["logits", "B"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
    ]
    out_batch = 1 if reshape else batch
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [out_batch, 2])],
        initializers,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="quorum-fixtures")
    m.ir_version = 8
    onnx.checker.check_model(m)
    OUT.mkdir(parents=True, exist_ok=True)
    onnx.save(m, OUT / f"{name}.onnx")
    print("wrote", OUT / f"{name}.onnx")


model("fixed_batch1", 1, False)
model("fixed_batch4", 4, False)
model("reshape_batch1", "N", True)
