"""The example models at three different opsets, as three teams' exporters would stamp them (issue
21's benchmark variant): technical (the MLP) at ai.onnx 13, fundamental (the boosted trees) at 9
with ai.onnx.ml 1 (what onnxmltools writes), sentiment (the logistic regression) at 22. Their nodes
mean the same at the lower opsets (the changes since were new types and optional attributes), so
those two are stamped lower; sentiment is converted up with the `onnx` package's version converter
(it has no adapter down from 14 for Add). Each answers as its original (checked with onnxruntime). Run with the training venv: .venv-train/bin/python scripts/make_mixed_opset_models.py
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import version_converter

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "examples" / "models"
OUT = MODELS / "mixed"
OUT.mkdir(parents=True, exist_ok=True)

for name, opset in [("technical", 13), ("fundamental", 9), ("sentiment", 22)]:
    model = onnx.load(MODELS / f"{name}.onnx")
    # skl2onnx imports the default domain twice in some models; the converter wants it once.
    seen, imports = set(), []
    for o in model.opset_import:
        if o.domain not in seen:
            seen.add(o.domain)
            imports.append(o)
    del model.opset_import[:]
    model.opset_import.extend(imports)
    if opset > 17:
        converted = version_converter.convert_version(model, opset)
    else:
        converted = model
        for o in converted.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = opset
    onnx.checker.check_model(converted)
    onnx.save(converted, OUT / f"{name}.onnx")
    width = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    x = np.random.default_rng(0).normal(size=(64, width)).astype(np.float32)
    a = ort.InferenceSession(str(MODELS / f"{name}.onnx")).run(["probabilities"], {"X": x})[0]
    b = ort.InferenceSession(str(OUT / f"{name}.onnx")).run(["probabilities"], {"X": x})[0]
    assert np.abs(a - b).max() < 1e-6, name
    print(name, [(o.domain, o.version) for o in converted.opset_import])
