"""A wider MLP for the quantization benchmarks (`make models`): 16 features → 256 → 256 → 2, trained on
the same real S&P 500 data and split as the example models, written to examples/models/wide.onnx and
listed under "benchmark_models" in the manifest (the example ensembles do not use it)."""

import json

import numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from train_example_models import FUNDAMENTAL, HOLDOUT_START, MODELS, SEED, SENTIMENT, TECHNICAL, build_features, export, finite_rows

WIDE = TECHNICAL + SENTIMENT + [FUNDAMENTAL[0], FUNDAMENTAL[2], FUNDAMENTAL[7]]


def main():
    assert len(WIDE) == 16
    frame = build_features()
    train_all = frame[frame.index < HOLDOUT_START]
    holdout = frame[frame.index >= HOLDOUT_START]
    train = train_all[finite_rows(train_all, WIDE)]
    model = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(256, 256), alpha=1e-2, max_iter=200, early_stopping=True, random_state=SEED),
    )
    model.fit(train[WIDE].to_numpy(dtype=np.float32), train["next_day_up"].to_numpy())
    export(model, WIDE, "wide", "technical", train)
    ok = finite_rows(holdout, WIDE)
    acc = float((model.predict(holdout.loc[ok, WIDE].to_numpy(dtype=np.float32)) == holdout.loc[ok, "next_day_up"]).mean())
    manifest_path = MODELS / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["benchmark_models"] = [
        {"name": "wide", "kind": "technical", "features": WIDE, "output": "probabilities:1", "hidden": [256, 256], "train_rows": int(len(train)), "holdout_accuracy": round(acc, 4)}
    ]
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wide         trained on {len(train)} rows, holdout accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
