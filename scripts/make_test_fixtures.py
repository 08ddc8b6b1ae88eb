"""Small hand-built ONNX models for the error-path tests (run by `make models`).

fragile.onnx: a one-feature "classifier" whose positive-class probability is sqrt(x) / (1 + sqrt(x)).
For x < 0 ONNX Runtime returns NaN, which quorum must treat as that member failing at run time.
"""

import pathlib

import onnx
from onnx import TensorProto, helper

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"

x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])
probabilities = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])
one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
nodes = [
    helper.make_node("Sqrt", ["x"], ["root"]),
    helper.make_node("Add", ["root", "one"], ["denominator"]),
    helper.make_node("Div", ["root", "denominator"], ["p"]),
    helper.make_node("Sub", ["one", "p"], ["q"]),
    helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1),
]
graph = helper.make_graph(nodes, "fragile", [x], [probabilities], initializer=[one])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="quorum-tests")
model.ir_version = 8
onnx.checker.check_model(model)
OUT.mkdir(parents=True, exist_ok=True)
onnx.save(model, OUT / "fragile.onnx")
print(f"wrote {OUT / 'fragile.onnx'}")

# linear.onnx: a regressor y = 2 * a + b, output `variable` [N, 1] like sklearn-onnx regressors.
x2 = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
variable = helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])
coefficients = helper.make_tensor("coefficients", TensorProto.FLOAT, [2, 1], [2.0, 1.0])
graph = helper.make_graph([helper.make_node("MatMul", ["x", "coefficients"], ["variable"])], "linear", [x2], [variable], initializer=[coefficients])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="quorum-tests")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, OUT / "linear.onnx")
print(f"wrote {OUT / 'linear.onnx'}")

# slow.onnx: a one-feature classifier that burns ~1 s of CPU in 60 chained 512×512 MatMuls before
# answering sigmoid(x). The work depends on the input, so ONNX Runtime cannot constant-fold it away,
# and it is split into many nodes because ONNX Runtime checks its terminate flag between nodes: the
# per-call timeout tests cut it off.
SIZE, STEPS = 512, 60
nodes = [
    helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
    helper.make_node("Mul", ["total", "zero"], ["nothing"]),
    helper.make_node("ConstantOfShape", ["square"], ["filled"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0 / SIZE])),
    helper.make_node("Add", ["filled", "nothing"], ["m0"]),
]
for step in range(STEPS):
    nodes.append(helper.make_node("MatMul", [f"m{step}", "m0"], [f"m{step + 1}"]))
nodes += [
    helper.make_node("ReduceSum", [f"m{STEPS}"], ["burnt"], keepdims=0),
    helper.make_node("Mul", ["burnt", "zero"], ["no_effect"]),
    helper.make_node("Add", ["x", "no_effect"], ["logit"]),
    helper.make_node("Sigmoid", ["logit"], ["p"]),
    helper.make_node("Sub", ["one", "p"], ["q"]),
    helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1),
]
graph = helper.make_graph(
    nodes,
    "slow",
    [x],
    [probabilities],
    initializer=[
        one,
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("square", TensorProto.INT64, [2], [SIZE, SIZE]),
    ],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="quorum-tests")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, OUT / "slow.onnx")
print(f"wrote {OUT / 'slow.onnx'}")

# dense.onnx: a small random MLP (8 → 512 → 2) whose first weight matrix (16 KiB) is large enough for
# replicas to share it; the tests compare shared and private weights.
import numpy as np
from onnx import numpy_helper

rng = np.random.default_rng(3)
w1 = (rng.standard_normal((8, 512)) / np.sqrt(8)).astype(np.float32)
w2 = (rng.standard_normal((512, 2)) / np.sqrt(512)).astype(np.float32)
graph = helper.make_graph(
    [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ],
    "dense",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
    [probabilities],
    initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="quorum-tests")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, OUT / "dense.onnx")
print(f"wrote {OUT / 'dense.onnx'}")
