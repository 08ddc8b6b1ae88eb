"""Train quorum's three example models on real market data and export them to ONNX.

Build-time only: the demo and the tests use the committed .onnx and CSV files, so nothing here
is needed at run time. Run with `make models` (it creates the training virtualenv).

Data: the daily S&P 500, NASDAQ, VIX, WTI series and the monthly Fama-French, Moody's AAA/BAA and
core CPI series bundled in the PyPI `arch` package. Target: next-day S&P 500 direction
(1 when tomorrow's close is above today's). Models train on rows up to 2016-12-31; 2017-2018 is held
out and written, in time order, as the replay CSV.

Every feature of row t uses only information known at the close of day t; monthly series are
lagged by one month because they are published after the month ends.
"""

import json
import pathlib

import numpy as np
import pandas as pd
from arch.data import core_cpi, default, frenchdata, nasdaq, sp500, vix, wti
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "examples" / "models"
DATA = ROOT / "examples" / "data"
FIXTURES = ROOT / "tests" / "fixtures"
HOLDOUT_START = "2017-01-01"
SEED = 7

TECHNICAL = ["ret_1d", "ret_5d", "ret_20d", "vol_20d", "hl_range", "rsi_14", "volume_z", "nasdaq_log_volume_chg"]
FUNDAMENTAL = ["default_spread", "default_spread_chg", "core_cpi_yoy", "ff_mkt_rf", "ff_smb", "ff_hml", "ff_rf", "wti_ret_20d"]
SENTIMENT = ["vix", "vix_chg_1d", "vix_chg_5d", "vix_rel_20d", "vix_zscore_60d"]


def monthly_lagged(frame: pd.DataFrame, daily_index: pd.DatetimeIndex) -> pd.DataFrame:
    """Align a monthly series to trading days, shifted one month so a value is used only once published."""
    frame = frame.copy()
    frame.index = frame.index.to_period("M").to_timestamp() + pd.offsets.MonthBegin(1)
    return frame.reindex(daily_index, method="ffill")


def build_features() -> pd.DataFrame:
    spx = sp500.load()
    ndx = nasdaq.load()
    close = spx["Adj Close"]
    log_close = np.log(close)
    out = pd.DataFrame(index=spx.index)
    out["ret_1d"] = log_close.diff()
    out["ret_5d"] = log_close.diff(5)
    out["ret_20d"] = log_close.diff(20)
    out["vol_20d"] = out["ret_1d"].rolling(20).std() * np.sqrt(252)
    out["hl_range"] = np.log(spx["High"] / spx["Low"])
    delta = close.diff()
    gain = delta.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    loss = (-delta.clip(upper=0)).ewm(alpha=1 / 14, adjust=False).mean()
    out["rsi_14"] = 100 - 100 / (1 + gain / loss)
    log_volume = np.log(spx["Volume"].astype(float))
    out["volume_z"] = (log_volume - log_volume.rolling(20).mean()) / log_volume.rolling(20).std()
    # NASDAQ reports zero volume on some days: log(0) = -inf. Kept on purpose in the replay data.
    with np.errstate(divide="ignore"):
        ndx_log_volume = np.log(ndx["Volume"].astype(float).reindex(out.index))
    out["nasdaq_log_volume_chg"] = ndx_log_volume.diff()

    spread = default.load()
    spread = pd.DataFrame({"default_spread": spread["BAA"] - spread["AAA"]})
    spread["default_spread_chg"] = spread["default_spread"].diff()
    out = out.join(monthly_lagged(spread, out.index))
    cpi = core_cpi.load()
    cpi = pd.DataFrame({"core_cpi_yoy": np.log(cpi["CPILFESL"]).diff(12)})
    out = out.join(monthly_lagged(cpi, out.index))
    ff = frenchdata.load()
    # arch parses the YYYYMM dates of this file as nanoseconds since 1970: recover YYYYMM from them.
    ff.index = pd.to_datetime(ff.index.asi8.astype(str), format="%Y%m")
    ff = ff.rename(columns={"Mkt-RF": "ff_mkt_rf", "SMB": "ff_smb", "HML": "ff_hml", "RF": "ff_rf"})
    out = out.join(monthly_lagged(ff[["ff_mkt_rf", "ff_smb", "ff_hml", "ff_rf"]], out.index))
    oil = pd.to_numeric(wti.load()["DCOILWTICO"], errors="coerce").reindex(out.index).ffill()
    out["wti_ret_20d"] = np.log(oil).diff(20)

    v = vix.load()["vix"].reindex(out.index)
    out["vix"] = v
    out["vix_chg_1d"] = np.log(v).diff()
    out["vix_chg_5d"] = np.log(v).diff(5)
    out["vix_rel_20d"] = v / v.rolling(20).mean() - 1
    out["vix_zscore_60d"] = (v - v.rolling(60).mean()) / v.rolling(60).std()

    out["next_day_up"] = (log_close.shift(-1) > log_close).astype(int)
    out = out.iloc[:-1]  # the last day has no next day
    return out.astype({c: np.float32 for c in out.columns if c != "next_day_up"})


def finite_rows(frame: pd.DataFrame, columns) -> pd.Series:
    return np.isfinite(frame[columns].to_numpy(dtype=np.float64)).all(axis=1)


def export(model, columns, name, kind, train):
    x = train[columns].to_numpy(dtype=np.float32)
    onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}} if not hasattr(model, "steps") else {id(model.steps[-1][1]): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    onx.doc_string = f"quorum example {kind} model: next-day S&P 500 direction"
    (MODELS / f"{name}.onnx").write_bytes(onx.SerializeToString())


def main():
    MODELS.mkdir(parents=True, exist_ok=True)
    DATA.mkdir(parents=True, exist_ok=True)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    frame = build_features()
    train_all = frame[frame.index < HOLDOUT_START]
    holdout = frame[frame.index >= HOLDOUT_START]

    specs = [
        ("technical", "technical", TECHNICAL, make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16, 8), alpha=1e-2, max_iter=400, early_stopping=True, random_state=SEED))),
        ("fundamental", "fundamental", FUNDAMENTAL, GradientBoostingClassifier(n_estimators=60, max_depth=3, learning_rate=0.05, subsample=0.8, random_state=SEED)),
        ("sentiment", "sentiment", SENTIMENT, make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=1000))),
    ]
    manifest = {"target": "next_day_up", "holdout_start": HOLDOUT_START, "models": []}
    for name, kind, columns, model in specs:
        train = train_all[finite_rows(train_all, columns)]
        model.fit(train[columns].to_numpy(dtype=np.float32), train["next_day_up"].to_numpy())
        export(model, columns, name, kind, train)
        ok = finite_rows(holdout, columns)
        acc = float((model.predict(holdout.loc[ok, columns].to_numpy(dtype=np.float32)) == holdout.loc[ok, "next_day_up"]).mean())
        manifest["models"].append({"name": name, "kind": kind, "features": columns, "output": "probabilities:1", "train_rows": int(len(train)), "train_from": str(train.index[0].date()), "holdout_accuracy": round(acc, 4)})
        print(f"{name:12s} trained on {len(train)} rows from {train.index[0].date()}, holdout accuracy {acc:.4f}")

    columns = TECHNICAL + FUNDAMENTAL + SENTIMENT
    replay = holdout[columns + ["next_day_up"]].copy()
    replay.insert(0, "date", replay.index.strftime("%Y-%m-%d"))
    replay.to_csv(DATA / "holdout.csv", index=False, float_format="%.7g")
    bad = replay[~finite_rows(replay, columns)]
    fixture = pd.concat([replay.iloc[:3], bad]).sort_index()
    fixture.to_csv(FIXTURES / "replay_with_bad_rows.csv", index=False, float_format="%.7g")
    manifest["holdout_rows"] = int(len(replay))
    manifest["holdout_base_rate"] = round(float(replay["next_day_up"].mean()), 4)
    manifest["non_finite_rows"] = bad["date"].tolist()
    (MODELS / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"holdout: {len(replay)} rows, {len(bad)} with non-finite features ({', '.join(bad['date'])}), base rate {manifest['holdout_base_rate']}")


if __name__ == "__main__":
    main()
