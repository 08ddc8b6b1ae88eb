"""Build quorum's volatility-forecasting example: three forecasters of next-day S&P 500 variance.

Build-time only (`make volatility-example`): the tests and the README use the committed files in
examples/volatility/. Data: the daily S&P 500 bundled in the PyPI `arch` package (1999-2018).

Target (`next_var`): the next trading day's Garman-Klass variance from its open, high, low and
close, annualised, in percent squared (a 20% annual volatility is 400). Every forecaster uses only
what is known at the close of day t to forecast day t+1:

* garch: a GARCH(1,1) (arch, constant mean, normal errors) on daily close-to-close returns in
  percent, re-estimated each January on every earlier day (expanding window), filtered forward with
  those parameters through the year; its one-step variance forecast, annualised (x 252). Fed to
  quorum as the column `garch_var` through a pass-through ONNX model.
* har: HAR-RV (Corsi 2009): a linear regression of next_var on the Garman-Klass variance of the
  day, the mean of the last 5 days and of the last 22 days, fitted on 1999-2009 only, exported with
  skl2onnx (a real ONNX LinearRegressor graph over `rv_d, rv_w, rv_m`).
* ewma: RiskMetrics (J.P. Morgan 1996): sigma2[t+1] = 0.94 sigma2[t] + 0.06 r[t]^2 on close-to-close
  percent returns, annualised. Fed as the column `ewma_var` through a pass-through model.

The CSV (examples/volatility/volatility.csv) holds 2010-2018 in time order: `date` (yyyymmdd), the
three inputs above, `ret_1d` (the day's log return, for the regime detector) and `next_var`.
"""

import pathlib

import numpy as np
import onnx
import pandas as pd
from arch import arch_model
from arch.data import sp500
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.linear_model import LinearRegression

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "examples" / "volatility"
TEST_START = "2010-01-01"
ANNUAL = 252.0


def garman_klass(spx: pd.DataFrame) -> pd.Series:
    """Daily Garman-Klass variance, annualised, in percent squared."""
    hl = np.log(spx["High"] / spx["Low"])
    co = np.log(spx["Close"] / spx["Open"])
    daily = 0.5 * hl**2 - (2 * np.log(2) - 1) * co**2
    return daily.clip(lower=0) * ANNUAL * 1e4


def garch_forecasts(returns: pd.Series) -> pd.Series:
    """One-step GARCH(1,1) variance forecasts made at each close, re-estimated every January."""
    out = pd.Series(np.nan, index=returns.index)
    for year in range(2000, returns.index[-1].year + 1):
        start = pd.Timestamp(f"{year}-01-01")
        history = returns[returns.index < start]
        fitted = arch_model(history, mean="Constant", vol="GARCH", p=1, q=1, dist="normal").fit(disp="off")
        through = returns[returns.index < pd.Timestamp(f"{year + 1}-01-01")]
        fixed = arch_model(through, mean="Constant", vol="GARCH", p=1, q=1, dist="normal").fix(fitted.params)
        # The forecast made at the close of day t (horizon 1) is for day t+1: it uses data up to t.
        forecast = fixed.forecast(horizon=1, start=history.index[-1], reindex=False).variance["h.1"]
        days = forecast.index[forecast.index >= history.index[-1]]
        out.loc[days] = forecast.loc[days].to_numpy()
    return out * ANNUAL


def pass_through(feature: str, path: pathlib.Path) -> None:
    """An ONNX model whose output `variable` is its one input column: a forecast made elsewhere."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 1])
    y = helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])
    graph = helper.make_graph([helper.make_node("Identity", ["X"], ["variable"])], f"{feature}_pass_through", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="quorum-example")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    spx = sp500.load()
    close = spx["Adj Close"]
    log_ret = np.log(close).diff()
    pct = 100 * log_ret
    frame = pd.DataFrame(index=spx.index)
    frame["rv_d"] = garman_klass(spx)
    frame["rv_w"] = frame["rv_d"].rolling(5).mean()
    frame["rv_m"] = frame["rv_d"].rolling(22).mean()
    ewma = np.empty(len(pct))
    ewma[:] = np.nan
    var = float(np.nanvar(pct.iloc[1:23]))
    for i in range(1, len(pct)):
        var = 0.94 * var + 0.06 * pct.iloc[i] ** 2
        ewma[i] = var
    frame["ewma_var"] = ewma * ANNUAL
    frame["garch_var"] = garch_forecasts(pct.dropna())
    frame["ret_1d"] = log_ret
    frame["next_var"] = frame["rv_d"].shift(-1)
    frame = frame.dropna()

    train = frame[frame.index < TEST_START]
    test = frame[frame.index >= TEST_START]
    har = LinearRegression().fit(train[["rv_d", "rv_w", "rv_m"]].to_numpy(np.float32), train["next_var"])
    onx = to_onnx(har, train[["rv_d", "rv_w", "rv_m"]].to_numpy(np.float32)[:1], target_opset=17)
    (OUT / "har.onnx").write_bytes(onx.SerializeToString())
    pass_through("garch_var", OUT / "garch.onnx")
    pass_through("ewma_var", OUT / "ewma.onnx")

    table = test[["garch_var", "ewma_var", "rv_d", "rv_w", "rv_m", "ret_1d", "next_var"]].copy()
    table.insert(0, "date", test.index.strftime("%Y%m%d").astype(int))
    table.to_csv(OUT / "volatility.csv", index=False, float_format="%.6g")
    print(f"wrote {len(table)} rows ({table.index[0].date()} .. {table.index[-1].date()}) to {OUT}")
    print("HAR coefficients (d, w, m):", har.coef_, "intercept", har.intercept_)


if __name__ == "__main__":
    main()
