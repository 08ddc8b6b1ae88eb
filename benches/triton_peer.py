"""A real NVIDIA Triton Inference Server (the one inside PyPI's nvidia-pytriton) serving the three
example models averaged with the same weights as `market`, with dynamic batching, over the same Open
Inference Protocol route quorum serves: the Triton peer of benches/serve_load.py.

    python benches/triton_peer.py HTTP_PORT
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = json.load(open(os.path.join(REPO, "examples/models/manifest.json")))
WEIGHTS = {"technical": 0.4, "fundamental": 0.4, "sentiment": 0.2}
FEATURES = []
for m in MANIFEST["models"]:
    FEATURES += [f for f in m["features"] if f not in FEATURES]

options = ort.SessionOptions()
options.intra_op_num_threads = 1
MODELS = [(m["name"], ort.InferenceSession(os.path.join(REPO, "examples/models", m["name"] + ".onnx"), options,
                                           providers=["CPUExecutionProvider"]), m["features"])
          for m in MANIFEST["models"]]


@batch
def infer(**inputs):
    total = None
    for name, session, features in MODELS:
        rows = np.concatenate([inputs[f] for f in features], axis=1).astype(np.float32)
        p = session.run(["probabilities"], {session.get_inputs()[0].name: rows})[0][:, 1:2]
        total = WEIGHTS[name] * p if total is None else total + WEIGHTS[name] * p
    return {"prediction": total.astype(np.float32), "confidence": np.abs(2 * total - 1).astype(np.float32)}


def main():
    port = int(sys.argv[1])
    config = TritonConfig(http_port=port, grpc_port=port + 1, metrics_port=port + 2, log_verbose=0)
    with Triton(config=config) as triton:
        triton.bind(
            model_name="market",
            infer_func=infer,
            inputs=[Tensor(name=f, dtype=np.float32, shape=(1,)) for f in FEATURES],
            outputs=[Tensor(name="prediction", dtype=np.float32, shape=(1,)),
                     Tensor(name="confidence", dtype=np.float32, shape=(1,))],
            config=ModelConfig(max_batch_size=256, batcher=DynamicBatcher(max_queue_delay_microseconds=100)),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
