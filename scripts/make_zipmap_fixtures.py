"""Classifiers exported with their exporters' default options, ZipMap output included (issue 22),
for tests/zipmap.rs, each next to the same model exported without ZipMap (`*_plain.onnx`, the
reference):

- zipmap_int.onnx: sklearn LogisticRegression, labels 0/1, skl2onnx defaults;
- zipmap_str.onnx: the same trained on labels "down"/"up";
- zipmap_lightgbm.onnx: a LightGBM classifier through onnxmltools' defaults (labels 0/1);
- zipmap_three.onnx: a three-class LogisticRegression with labels "down", "flat", "up";
- regressor_default.onnx: a LinearRegression with skl2onnx defaults (output `variable`, no
  probabilities), next to nothing: its reference is its own output.

Trained on the example data's three features ret_1d, ret_5d, vix. Run with the training venv:
    .venv-train/bin/python scripts/make_zipmap_fixtures.py
"""

from pathlib import Path

import lightgbm
import numpy as np
import onnx
import pandas as pd
from onnxmltools import convert_lightgbm
from onnxmltools.convert.common.data_types import FloatTensorType
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "exporters"
FEATURES = ["ret_1d", "ret_5d", "vix"]

frame = pd.read_csv(ROOT / "examples" / "data" / "holdout.csv").dropna()
x = frame[FEATURES].to_numpy(np.float32)
y = frame["next_day_up"].to_numpy().astype(int)
OUT.mkdir(parents=True, exist_ok=True)


def save(name, default, plain):
    onnx.save(default, OUT / f"{name}.onnx")
    onnx.save(plain, OUT / f"{name}_plain.onnx")
    print(name, [o.name for o in default.graph.output], "|", [o.name for o in plain.graph.output])


m = LogisticRegression(max_iter=500).fit(x, y)
save("zipmap_int", to_onnx(m, x[:1], target_opset=17), to_onnx(m, x[:1], options={"zipmap": False}, target_opset=17))

m = LogisticRegression(max_iter=500).fit(x, np.where(y == 1, "up", "down"))
save("zipmap_str", to_onnx(m, x[:1], target_opset=17), to_onnx(m, x[:1], options={"zipmap": False}, target_opset=17))

three = np.where(frame["ret_1d"].shift(-1).fillna(0) > 0.005, "up", np.where(frame["ret_1d"].shift(-1).fillna(0) < -0.005, "down", "flat"))
m = LogisticRegression(max_iter=500).fit(x, three)
save("zipmap_three", to_onnx(m, x[:1], target_opset=17), to_onnx(m, x[:1], options={"zipmap": False}, target_opset=17))

from sklearn.linear_model import LinearRegression

m = LinearRegression().fit(x, frame["ret_1d"].shift(-1).fillna(0).to_numpy(np.float32))
onnx.save(to_onnx(m, x[:1], target_opset=17), OUT / "regressor_default.onnx")

m = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1, random_state=0).fit(x, y)
types = [("input", FloatTensorType([None, 3]))]
save("zipmap_lightgbm", convert_lightgbm(m, initial_types=types), convert_lightgbm(m, initial_types=types, zipmap=False))
