"""Triton Python backend: the three example models (onnxruntime) averaged like quorum's `market`.
Inputs (one per feature) are added to config.pbtxt by benches/triton_peer.py."""

import json
import os
import sys

WEIGHTS = {"technical": 0.4, "fundamental": 0.4, "sentiment": 0.2}
np = ort = pb_utils = None


class TritonPythonModel:
    def initialize(self, args):
        # The stub runs without the virtualenv: its site-packages and the repository come from the
        # model's parameters (written by triton_peer.py).
        global np, ort, pb_utils
        parameters = json.loads(args["model_config"])["parameters"]
        sys.path.insert(0, parameters["site_packages"]["string_value"])
        REPO = parameters["quorum_repo"]["string_value"]
        import numpy as np
        import onnxruntime as ort
        import triton_python_backend_utils as pb_utils
        manifest = json.load(open(os.path.join(REPO, "examples/models/manifest.json")))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.models = []
        for m in manifest["models"]:
            session = ort.InferenceSession(os.path.join(REPO, "examples/models", m["name"] + ".onnx"), options,
                                           providers=["CPUExecutionProvider"])
            self.models.append((m["name"], session, session.get_inputs()[0].name, m["features"]))

    def execute(self, requests):
        responses = []
        for request in requests:
            total = None
            for name, session, input_name, features in self.models:
                rows = np.concatenate([pb_utils.get_input_tensor_by_name(request, f).as_numpy() for f in features],
                                      axis=1).astype(np.float32)
                p = session.run(["probabilities"], {input_name: rows})[0][:, 1:2]
                total = WEIGHTS[name] * p if total is None else total + WEIGHTS[name] * p
            outputs = [pb_utils.Tensor("prediction", total.astype(np.float32)),
                       pb_utils.Tensor("confidence", np.abs(2 * total - 1).astype(np.float32))]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
