"""Small models at old opsets, one per adapter that fusion's opset lifting applies (issue 21), for
tests/opset_lift.rs: each has one float input X and one float output Y, and the test checks that
ONNX Runtime answers the same before and after lifting to the opset in the manifest.

Run with the training venv: .venv-train/bin/python scripts/make_lift_fixtures.py
"""

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "lift"
OUT.mkdir(parents=True, exist_ok=True)
manifest = []


def save(name, opset, nodes, x_shape, y_shape, target, inits=(), ir=7):
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape)],
        list(inits),
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="quorum-fixtures")
    m.ir_version = ir
    onnx.checker.check_model(m)
    onnx.save(m, OUT / f"{name}.onnx")
    manifest.append({"file": f"{name}.onnx", "input": [d if isinstance(d, int) else -1 for d in x_shape], "target": target})


node = helper.make_node
save("reducesum_12", 12, [node("ReduceSum", ["X"], ["Y"], axes=[1], keepdims=1)], ["N", 4], ["N", 1], 13)
save("reducemean_17", 17, [node("ReduceMean", ["X"], ["Y"], axes=[1], keepdims=0)], ["N", 4], ["N"], 18)
save("reducemax_all_17", 17, [node("ReduceMax", ["X"], ["Y"], keepdims=1)], ["N", 4], [1, 1], 18)
save("squeeze_unsqueeze_12", 12, [
    node("Unsqueeze", ["X"], ["U"], axes=[2]),
    node("Squeeze", ["U"], ["Y"], axes=[2]),
], ["N", 4], ["N", 4], 13)
save("split_12", 12, [
    node("Split", ["X"], ["A", "B"], axis=1, split=[1, 3]),
    node("ReduceSum", ["B"], ["S"], axes=[1], keepdims=1),
    node("Add", ["A", "S"], ["Y"]),
], ["N", 4], ["N", 1], 18)
save("split_even_17", 17, [
    node("Split", ["X"], ["A", "B"], axis=1),
    node("Sub", ["A", "B"], ["Y"]),
], ["N", 4], ["N", 2], 18)
save("clip_10", 10, [node("Clip", ["X"], ["Y"], min=-0.5, max=0.75)], ["N", 4], ["N", 4], 11)
save("clip_max_only_10", 10, [node("Clip", ["X"], ["Y"], max=0.25)], ["N", 4], ["N", 4], 13)
save("topk_9", 9, [node("TopK", ["X"], ["Y", "I"], k=2, axis=1)], ["N", 4], ["N", 2], 10)
save("softmax_2d_12", 12, [node("Softmax", ["X"], ["Y"])], ["N", 4], ["N", 4], 13)
save("softmax_3d_12", 12, [node("Softmax", ["X"], ["Y"], axis=1)], ["N", 2, 3], ["N", 2, 3], 13)
save("logsoftmax_3d_12", 12, [node("LogSoftmax", ["X"], ["Y"])], ["N", 2, 3], ["N", 2, 3], 13)
save("hardmax_3d_12", 12, [node("Hardmax", ["X"], ["Y"], axis=1)], ["N", 2, 3], ["N", 2, 3], 13)
save("pad_10", 10, [node("Pad", ["X"], ["Y"], pads=[0, 1, 0, 2], value=0.5)], ["N", 4], ["N", 7], 11)
save("slice_9", 9, [node("Slice", ["X"], ["Y"], starts=[1], ends=[3], axes=[1])], ["N", 4], ["N", 2], 10)
save("dropout_11", 11, [node("Dropout", ["X"], ["Y"], ratio=0.3)], ["N", 4], ["N", 4], 12)
save("batchnorm_13", 13, [
    node("BatchNormalization", ["X", "scale", "bias", "mean", "var"], ["Y"], epsilon=1e-3),
], ["N", 4], ["N", 4], 15, inits=[
    numpy_helper.from_array(np.array([1.0, 2.0, 0.5, 1.5], np.float32), "scale"),
    numpy_helper.from_array(np.array([0.1, -0.2, 0.3, 0.0], np.float32), "bias"),
    numpy_helper.from_array(np.array([0.5, 0.0, -0.5, 1.0], np.float32), "mean"),
    numpy_helper.from_array(np.array([1.0, 2.0, 0.5, 4.0], np.float32), "var"),
])
save("upsample_8", 8, [node("Upsample", ["X"], ["Y"], scales=[1.0, 1.0, 2.0, 2.0], mode="nearest")],
     ["N", 1, 2, 3], ["N", 1, 4, 6], 13)
save("upsample_linear_9", 9, [node("Upsample", ["X", "S"], ["Y"], mode="linear")],
     ["N", 1, 2, 3], ["N", 1, 4, 6], 11, inits=[numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "S")])
save("resize_nearest_10", 10, [node("Resize", ["X", "S"], ["Y"], mode="nearest")],
     ["N", 1, 2, 3], ["N", 1, 3, 4], 13, inits=[numpy_helper.from_array(np.array([1, 1, 1.5, 1.5], np.float32), "S")])
save("resize_linear_10", 10, [node("Resize", ["X", "S"], ["Y"], mode="linear")],
     ["N", 1, 2, 3], ["N", 1, 3, 4], 11, inits=[numpy_helper.from_array(np.array([1, 1, 1.5, 1.5], np.float32), "S")])
# A graph of operators whose schemas changed only by adding types: every step is Compatible.
save("mlp_8", 8, [
    node("MatMul", ["X", "W"], ["H"]),
    node("Add", ["H", "B"], ["Z"]),
    node("Relu", ["Z"], ["R"]),
    node("Sigmoid", ["R"], ["Y"]),
], ["N", 4], ["N", 2], 22, inits=[
    numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(4, 2) / 10, "W"),
    numpy_helper.from_array(np.array([0.1, -0.3], np.float32), "B"),
], ir=4)
(OUT / "manifest.json").write_text(json.dumps({"models": manifest}, indent=2) + "\n")
print(f"wrote {len(manifest)} models to {OUT}")
