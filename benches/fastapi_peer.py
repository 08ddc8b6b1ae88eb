"""What a team would write instead of quorum serve: FastAPI + uvicorn + onnxruntime calling the three
example models and averaging them with the same weights (0.4/0.4/0.2), answering the same request
shape as POST /api/v1/ml/ensemble/{id}/predict. The peer of benches/serve_load.sh.

    python benches/fastapi_peer.py PORT
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException, Request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = json.load(open(os.path.join(REPO, "examples/models/manifest.json")))
WEIGHTS = {"technical": 0.4, "fundamental": 0.4, "sentiment": 0.2}

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
MODELS = []
for m in MANIFEST["models"]:
    session = ort.InferenceSession(os.path.join(REPO, "examples/models", m["name"] + ".onnx"), options,
                                   providers=["CPUExecutionProvider"])
    MODELS.append((m["name"], session, session.get_inputs()[0].name, m["features"]))

app = FastAPI()


@app.post("/api/v1/ml/ensemble/{ensemble_id}/predict")
async def predict(ensemble_id: str, request: Request):
    body = await request.json()
    market = body["features"]["market_data"]
    contributions = {}
    total = 0.0
    for name, session, input_name, features in MODELS:
        try:
            row = np.array([[market[f] for f in features]], dtype=np.float32)
        except KeyError as e:
            raise HTTPException(status_code=422, detail=f"missing feature {e}")
        probabilities = session.run(["probabilities"], {input_name: row})[0]
        p = float(probabilities[0, 1])
        contributions[name] = {"prediction": p, "weight": WEIGHTS[name]}
        total += WEIGHTS[name] * p
    return {"prediction": total, "confidence": abs(2 * total - 1), "model_contributions": contributions}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
