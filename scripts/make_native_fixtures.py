"""Writes the exporter models the native-executor tests check against ONNX Runtime
(tests/fixtures/native/*.onnx and its manifest.json) and, with --bench, the 500-tree LightGBM models
the native benchmark uses (target/quorum-models/lightgbm500*.onnx, not committed: 2 MB and more).

Models are written as each exporter writes them with its defaults (zipmap off so the probability
tensor is the output), at several opsets: sklearn MLPs and logistic regressions from skl2onnx at
every ai.onnx opset from 9 to 22, forests and boosting from skl2onnx, LightGBM and XGBoost from
onnxmltools, pipelines with Scaler / Normalizer / Imputer, and torch-style Gemm MLPs built with
onnx.helper (torch itself is not installed here). Build-time only; the tests read the files.
"""

import json
import pathlib
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "native"
FEATURES = 8


def data(n=600, seed=7):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    logit = x[:, 0] - 0.7 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + 0.3 * rng.normal(size=n)
    y = (logit > 0).astype(np.int64)
    y3 = np.digitize(logit, [-0.5, 0.5]).astype(np.int64)
    reg = (np.abs(logit) + 0.1 * x[:, 4]).astype(np.float32)
    return x, y, y3, reg


def skl(model, opset, ml_opset=None, zipmap=False):
    from skl2onnx import to_onnx

    target = {"": opset} if ml_opset is None else {"": opset, "ai.onnx.ml": ml_opset}
    options = {id(model): {"zipmap": False}} if zipmap is False and hasattr(model, "predict_proba") else None
    x, *_ = data()
    return to_onnx(model, x[:1], target_opset=target, options=options)


def save(manifest, name, model, output, column, task):
    path = OUT / f"{name}.onnx"
    onnx.save(model, path)
    manifest.append({"file": path.name, "output": output, "column": column, "task": task,
                     "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import}})


def torch_style_mlp(opset, hidden=(16, 8), seed=3):
    """nn.Sequential(Linear, ReLU, Linear, Tanh, Linear, Sigmoid) as torch.onnx.export writes it."""
    rng = np.random.default_rng(seed)
    widths = (FEATURES,) + hidden + (1,)
    nodes, inits = [], []
    prev = "input"
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        w = numpy_helper.from_array(rng.normal(scale=0.5, size=(b, a)).astype(np.float32), f"l{i}.weight")
        bias = numpy_helper.from_array(rng.normal(scale=0.1, size=(b,)).astype(np.float32), f"l{i}.bias")
        inits += [w, bias]
        nodes.append(helper.make_node("Gemm", [prev, w.name, bias.name], [f"g{i}"], alpha=1.0, beta=1.0, transB=1))
        act = ["Relu", "Tanh", "Sigmoid"][min(i, 2)]
        nodes.append(helper.make_node(act, [f"g{i}"], [f"a{i}"]))
        prev = f"a{i}"
    nodes.append(helper.make_node("Flatten", [prev], ["output"], axis=1))
    graph = helper.make_graph(nodes, "torch_mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", FEATURES])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="pytorch")
    model.ir_version = 7 if opset < 15 else 8
    onnx.checker.check_model(model)
    return model


def fixtures():
    from sklearn.ensemble import (ExtraTreesRegressor, GradientBoostingClassifier, GradientBoostingRegressor,
                                  RandomForestClassifier, RandomForestRegressor)
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, Normalizer, StandardScaler
    from sklearn.tree import DecisionTreeClassifier
    import lightgbm
    import xgboost
    from onnxmltools import convert_lightgbm, convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.onnx"):
        old.unlink()
    x, y, y3, reg = data()
    manifest = []
    mlp = MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=300, random_state=0).fit(x, y)
    logreg = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    for opset in range(9, 23):
        save(manifest, f"mlp_opset{opset}", skl(mlp, opset, 1), "probabilities", 1, "classification")
        save(manifest, f"logreg_opset{opset}", skl(logreg, opset, 1), "probabilities", 1, "classification")
        save(manifest, f"torch_mlp_opset{opset}", torch_style_mlp(opset), "output", None, "classification")
    save(manifest, "mlp3_opset17", skl(MLPClassifier(hidden_layer_sizes=(12,), max_iter=300, random_state=0).fit(x, y3), 17, 1),
         "probabilities", 2, "classification")
    save(manifest, "logreg3_opset15", skl(LogisticRegression(max_iter=300).fit(x, y3), 15, 1), "probabilities", 0, "classification")
    forest = RandomForestClassifier(n_estimators=12, max_depth=5, random_state=0).fit(x, y)
    for ml in (1, 3):
        save(manifest, f"forest_ml{ml}", skl(forest, 15, ml), "probabilities", 1, "classification")
    save(manifest, "forest3", skl(RandomForestClassifier(n_estimators=8, max_depth=4, random_state=0).fit(x, y3), 17, 3),
         "probabilities", 2, "classification")
    save(manifest, "tree", skl(DecisionTreeClassifier(max_depth=6, random_state=0).fit(x, y), 13, 1), "probabilities", 1, "classification")
    save(manifest, "boosting", skl(GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(x, y), 17, 3),
         "probabilities", 1, "classification")
    save(manifest, "boosting3", skl(GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0).fit(x, y3), 17, 3),
         "probabilities", 1, "classification")
    # HistGradientBoostingClassifier is left out: skl2onnx 1.20 fails to convert it (it writes booleans
    # into nodes_missing_value_tracks_true, which onnx refuses).
    save(manifest, "forest_regressor", skl(RandomForestRegressor(n_estimators=10, max_depth=5, random_state=0).fit(x, reg), 15, 3),
         "variable", None, "regression")
    save(manifest, "extra_trees_regressor", skl(ExtraTreesRegressor(n_estimators=6, max_depth=4, random_state=0).fit(x, reg), 12, 1),
         "variable", None, "regression")
    save(manifest, "boosting_regressor", skl(GradientBoostingRegressor(n_estimators=25, max_depth=3, random_state=0).fit(x, reg), 17, 3),
         "variable", None, "regression")
    save(manifest, "linear_regressor", skl(make_pipeline(MinMaxScaler(), LinearRegression()).fit(x, reg), 10, 1),
         "variable", None, "regression")
    save(manifest, "normalized_logreg", skl(make_pipeline(Normalizer(norm="l2"), LogisticRegression()).fit(x, y), 13, 1),
         "probabilities", 1, "classification")
    save(manifest, "normalized_l1_max", skl(make_pipeline(Normalizer(norm="l1"), Normalizer(norm="max"), LogisticRegression()).fit(x, y), 13, 1),
         "probabilities", 1, "classification")
    xm = x.copy()
    xm[::7, 2] = np.nan
    save(manifest, "imputed_logreg", skl(make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()).fit(xm, y), 14, 1),
         "probabilities", 1, "classification")
    initial = [("input", FloatTensorType([None, FEATURES]))]
    lgbm = lightgbm.LGBMClassifier(n_estimators=40, num_leaves=15, verbose=-1, random_state=0).fit(x, y)
    save(manifest, "lightgbm", convert_lightgbm(lgbm, initial_types=initial, zipmap=False), "probabilities", 1, "classification")
    lgbm3 = lightgbm.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1, random_state=0).fit(x, y3)
    save(manifest, "lightgbm3", convert_lightgbm(lgbm3, initial_types=initial, zipmap=False), "probabilities", 0, "classification")
    lgbr = lightgbm.LGBMRegressor(n_estimators=30, num_leaves=15, verbose=-1, random_state=0).fit(x, reg)
    save(manifest, "lightgbm_regressor", convert_lightgbm(lgbr, initial_types=initial), "variable", None, "regression")
    xgb = xgboost.XGBClassifier(n_estimators=30, max_depth=3, random_state=0).fit(x, y)
    save(manifest, "xgboost", convert_xgboost(xgb, initial_types=initial), "probabilities", 1, "classification")
    xgbr = xgboost.XGBRegressor(n_estimators=20, max_depth=3, random_state=0).fit(x, reg)
    save(manifest, "xgboost_regressor", convert_xgboost(xgbr, initial_types=initial), "variable", None, "regression")
    (OUT / "manifest.json").write_text(json.dumps({"features": FEATURES, "models": manifest}, indent=1) + "\n")
    print(f"{len(manifest)} models in {OUT}")


def bench_model():
    """500-tree LightGBM classifiers on the example data (the technical model's features): 31 leaves
    at most per tree (LightGBM's default), and 63 (trees past 32 leaves take 64-bit leaf sets)."""
    import lightgbm
    import pandas as pd
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    manifest = json.loads((ROOT / "examples/models/manifest.json").read_text())
    features = manifest["models"][0]["features"]
    frame = pd.read_csv(ROOT / "examples/data/holdout.csv").replace([np.inf, -np.inf], np.nan).dropna()
    x = frame[features].to_numpy(np.float32)
    y = frame[manifest["target"]].to_numpy(np.int64)
    out = ROOT / "target" / "quorum-models"
    out.mkdir(parents=True, exist_ok=True)
    for name, leaves, min_child in [("lightgbm500", 31, 5), ("lightgbm500-63", 63, 2)]:
        model = lightgbm.LGBMClassifier(
            n_estimators=500, num_leaves=leaves, min_child_samples=min_child, verbose=-1, random_state=0
        ).fit(x, y)
        onx = convert_lightgbm(model, initial_types=[("input", FloatTensorType([None, len(features)]))], zipmap=False)
        onnx.save(onx, out / f"{name}.onnx")
        (out / f"{name}.json").write_text(json.dumps({"features": features, "output": "probabilities:1"}) + "\n")
        print(f"wrote {out / (name + '.onnx')}")


if __name__ == "__main__":
    if "--bench" in sys.argv:
        bench_model()
    else:
        fixtures()
