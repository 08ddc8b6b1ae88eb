//! The `quorum` binary: the documented command forms, JSON contracts, errors, and ONNX Runtime
//! versions 1.30 to 1.32 (each run is its own process, so each can load a different library).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn quorum(home: &Path, args: &[&str]) -> Output {
    quorum_with(home, &[], args)
}

fn quorum_with(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quorum"))
        .envs(env.iter().copied())
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .expect("run quorum")
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "quorum failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn setup(home: &Path, env: &[(&str, &str)]) {
    for (name, kind, features) in common::example_models() {
        let file = common::model_file(&name);
        let kind = format!("{kind:?}").to_lowercase();
        let args = ["models", "register", &name, "--file", file.to_str().unwrap(), "--features", &features.join(",")];
        let options = ["--output", "probabilities:1", "--kind", &kind, "--task", "classification"];
        ok(quorum_with(home, env, &[&args[..], &options[..]].concat()));
    }
    ok(quorum_with(
        home,
        env,
        &[
            "ensemble",
            "create",
            "market",
            "--members",
            "technical,fundamental,sentiment",
            "--weights",
            "0.5,0.3,0.2",
            "--strategy",
            "soft-vote",
        ],
    ));
}

fn holdout() -> String {
    common::repo().join("examples/data/holdout.csv").to_string_lossy().to_string()
}

#[test]
fn register_list_show_predict_and_replay_json() {
    let home = tempfile::tempdir().unwrap();
    setup(home.path(), &[]);
    let list = ok(quorum(home.path(), &["models", "list"]));
    assert!(list.contains("technical") && list.contains("fundamental") && list.contains("sentiment"), "{list}");
    let show: serde_json::Value =
        serde_json::from_str(&ok(quorum(home.path(), &["models", "show", "technical", "--json"]))).unwrap();
    assert_eq!(show["kind"], "technical");
    assert_eq!(show["output"]["column"], 1);
    assert_eq!(show["executor"]["kind"], "native", "{show}");
    let ensembles = ok(quorum(home.path(), &["ensemble", "list"]));
    assert!(ensembles.contains("market@1"), "{ensembles}");
    let shown: serde_json::Value =
        serde_json::from_str(&ok(quorum(home.path(), &["ensemble", "show", "market"]))).unwrap();
    assert_eq!(shown["weights"], serde_json::json!([0.5, 0.3, 0.2]));
    // The example models run natively: nothing is left for a fused ONNX Runtime session.
    assert_eq!(shown["fusion"]["fused"], false, "{shown}");
    assert!(shown["fusion"]["reason"].as_str().unwrap().contains("native"), "{shown}");

    let features: serde_json::Map<String, serde_json::Value> =
        common::holdout_features(1).remove(0).iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
    let text = serde_json::Value::Object(features).to_string();
    let p: serde_json::Value =
        serde_json::from_str(&ok(quorum(home.path(), &["predict", "market", "--features", &text]))).unwrap();
    for key in ["prediction", "confidence", "model_contributions", "latency_ms"] {
        assert!(p.get(key).is_some(), "{key} missing: {p}");
    }
    assert_eq!(p["model_contributions"].as_object().unwrap().len(), 3);

    let report: serde_json::Value = serde_json::from_str(&ok(quorum(
        home.path(),
        &["replay", "market", "--data", &holdout(), "--outcome", "next_day_up", "--json"],
    )))
    .unwrap();
    assert_eq!(report["rows"], 501);
    assert_eq!(report["refused"], 2, "the two zero-volume NASDAQ days");
    for section in [
        &report["ensemble"],
        &report["members"]["technical"],
        &report["members"]["fundamental"],
        &report["members"]["sentiment"],
    ] {
        for key in ["accuracy", "precision", "recall", "f1_score"] {
            let v = section[key].as_f64().unwrap_or_else(|| panic!("{key} in {section}"));
            assert!((0.0..=1.0).contains(&v));
        }
    }
    for key in ["p50", "p95", "p99"] {
        assert!(report["latency_ms"][key].as_f64().unwrap() > 0.0);
    }
    assert!(report["throughput"].as_f64().unwrap() > 0.0);
    let table = ok(quorum(home.path(), &["replay", "market", "--data", &holdout(), "--outcome", "next_day_up"]));
    assert!(table.contains("accuracy") && table.contains("p99"), "{table}");

    let dir = home.path().join("bt");
    let backtest: serde_json::Value = serde_json::from_str(&ok(quorum(
        home.path(),
        &[
            "backtest",
            "market",
            "--data",
            &holdout(),
            "--outcome",
            "next_day_up",
            "--json",
            "--regime-feature",
            "ret_1d",
            "--report-dir",
            dir.to_str().unwrap(),
        ],
    )))
    .unwrap();
    assert_eq!(backtest["rows"], 501);
    for method in ["technical", "equal", "static", "hedge", "boa", "stacking", "blending", "regime"] {
        assert!(backtest["methods"][method]["log_loss"].is_number(), "{method}: {backtest}");
    }
    assert!(backtest["regimes"]["high"]["hedge"]["brier"].is_number());
    assert!(dir.join("backtest.svg").is_file() && dir.join("backtest.json").is_file());

    // Adaptive ensemble with regimes; its tracked metrics outlive the replay's process.
    ok(quorum(
        home.path(),
        &["ensemble", "create", "adaptive", "--members", "technical,fundamental,sentiment", "--strategy", "hedge"],
    ));
    let create_regimes = ["ensemble", "create", "regimes", "--members", "technical,fundamental,sentiment"];
    ok(quorum(
        home.path(),
        &[&create_regimes[..], &["--regime-feature", "ret_1d", "--regime-strategy", "high=boa"]].concat(),
    ));
    ok(quorum(home.path(), &["replay", "regimes", "--data", &holdout(), "--outcome", "next_day_up"]));
    let metrics: serde_json::Value =
        serde_json::from_str(&ok(quorum(home.path(), &["metrics", "regimes", "--json"]))).unwrap();
    assert_eq!(metrics["metrics"]["all_time"]["count"], 499, "{metrics}");
    assert_eq!(metrics["ranking"].as_array().unwrap().len(), 3);
    assert!(metrics["regimes"].as_array().unwrap().len() >= 2);

    // Ensembles use it: refused with their names, until forced.
    let refused = quorum(home.path(), &["models", "remove", "sentiment"]);
    assert_clean_failure(&refused, "error[in_use]");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("market@1"));
    ok(quorum(home.path(), &["models", "remove", "sentiment", "--force"]));
    assert!(!ok(quorum(home.path(), &["models", "list"])).contains("sentiment"));
}

fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success: {}", String::from_utf8_lossy(&out.stdout));
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "panic: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one-line error: {stderr}");
}

#[test]
fn bad_input_is_a_one_line_error_with_a_nonzero_exit() {
    let home = tempfile::tempdir().unwrap();
    setup(home.path(), &[]);
    let h = home.path();
    assert_clean_failure(&quorum(h, &["predict", "nope", "--features", "{}"]), "ensemble not found");
    assert_clean_failure(&quorum(h, &["predict", "market", "--features", "{\"ret_1d\": 0.1}"]), "missing feature");
    assert_clean_failure(&quorum(h, &["predict", "market", "--features", "not json"]), "invalid JSON");
    assert_clean_failure(&quorum(h, &["models", "show", "../etc"]), "invalid model name");
    assert_clean_failure(
        &quorum(h, &["models", "register", "x", "--file", "/nonexistent.onnx", "--features", "a"]),
        "reading model file",
    );
    assert_clean_failure(
        &quorum(h, &["ensemble", "create", "e", "--members", "technical", "--weights", "1,2"]),
        "2 weights given for 1 members",
    );
    assert_clean_failure(
        &quorum(h, &["ensemble", "create", "e", "--members", "technical", "--strategy", "vibes"]),
        "unknown strategy",
    );
    assert_clean_failure(
        &quorum(h, &["replay", "market", "--data", &holdout(), "--outcome", "nope"]),
        "no column \"nope\"",
    );
    assert_clean_failure(
        &quorum(h, &["replay", "market", "--data", "/nonexistent.csv", "--outcome", "y"]),
        "reading /nonexistent.csv",
    );
    assert_clean_failure(&quorum(h, &["top", "--interval", "0"]), "at least 0.1 seconds");
    assert_clean_failure(&quorum(h, &["top", "--server", "https://example.org"]), "must start with http://");
    // Nothing listens on port 1 of loopback.
    assert_clean_failure(&quorum(h, &["alerts", "list", "--server", "http://127.0.0.1:1"]), "http://127.0.0.1:1");
    let rules = h.join("bad-rules.yml");
    std::fs::write(&rules, "latency_alert:\n  condition: p95_latency > 100\n  action: log\n").unwrap();
    assert_clean_failure(&quorum(h, &["alerts", "check", rules.to_str().unwrap()]), "needs a unit");
    let predict = ["predict", "market", "--features", "{}"];
    let unknown = quorum(h, &[&["--state", "mysql://root:hunter2@db/q"][..], &predict].concat());
    assert_clean_failure(&unknown, "expected sqlite:<path> or postgres://");
    // A database that does not answer (nothing on port 1), given through the environment: the
    // password stays out of the message.
    let down = quorum_with(h, &[("QUORUM_STATE", "postgres://app:hunter2@127.0.0.1:1/q")], &predict);
    assert_clean_failure(&down, "state database");
    for out in [&unknown, &down] {
        assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
    }
}

#[test]
fn missing_onnxruntime_says_how_to_get_it() {
    let home = tempfile::tempdir().unwrap();
    let out = quorum_with(
        home.path(),
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
        &["predict", "market", "--features", "{}"],
    );
    assert_clean_failure(&out, "pip install onnxruntime");
}

fn compat_library(version: &str) -> PathBuf {
    let path = common::repo().join(format!(".ort/{version}/libonnxruntime.so.{version}"));
    assert!(path.is_file(), "{} is missing: run `make ort-compat` (make test does)", path.display());
    path
}

#[test]
fn works_with_onnxruntime_1_30_and_1_31() {
    let mut builds = vec![ok(quorum(Path::new("/nonexistent-home-unused"), &["runtime"]))
        .lines()
        .find(|l| l.starts_with("build:"))
        .unwrap()
        .to_string()];
    for version in ["1.30.0", "1.31.0"] {
        let lib = compat_library(version);
        let home = tempfile::tempdir().unwrap();
        let env = [("ORT_DYLIB_PATH", lib.to_str().unwrap())];
        setup(home.path(), &env);
        let out = quorum_with(
            home.path(),
            &env,
            &["replay", "market", "--data", &holdout(), "--outcome", "next_day_up", "--json"],
        );
        let report: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
        let runtime = ok(quorum_with(home.path(), &env, &["runtime"]));
        assert!(
            runtime.contains(&format!("library: {}", lib.display())),
            "ORT {version} not the one loaded: {runtime}"
        );
        builds.push(runtime.lines().find(|l| l.starts_with("build:")).unwrap().to_string());
        assert_eq!((report["rows"].as_u64(), report["refused"].as_u64()), (Some(501), Some(2)), "ORT {version}");
    }
    builds.dedup();
    assert_eq!(builds.len(), 3, "three different ONNX Runtime builds were loaded: {builds:?}");
}

#[test]
fn optimize_and_benchmark_on_the_command_line_print_the_story_json() {
    let (home, _engine) = common::technical_home();
    let data = common::repo().join("examples/data/holdout.csv");
    let quorum = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_quorum"))
            .arg("--home")
            .arg(home.path())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let data = data.to_str().unwrap();
    let report = quorum(&[
        "optimize",
        "technical",
        "--data",
        data,
        "--outcome",
        "next_day_up",
        "--accuracy-threshold",
        "0.01",
        "--json",
    ]);
    for key in ["candidates", "chosen", "performance_improvement", "deployment_ready"] {
        assert!(report.get(key).is_some(), "{key} missing: {report}");
    }
    for c in report["candidates"].as_array().unwrap() {
        for key in ["method", "accuracy", "agreement", "latency_ms", "size_bytes", "accepted"] {
            assert!(c.get(key).is_some(), "{key} missing: {c}");
        }
    }
    let bench = quorum(&["benchmark", "technical", "--data", data, "--outcome", "next_day_up", "--json"]);
    assert_eq!(bench["latency"].as_array().unwrap().len(), 4);
    assert!(bench["accuracy"].as_f64().unwrap() > 0.5);
    // A bad method is a one-line error.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quorum"))
        .arg("--home")
        .arg(home.path())
        .args(["optimize", "technical", "--data", data, "--outcome", "next_day_up", "--method", "int4"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown optimization method"));
}

#[test]
fn an_experiment_routes_keys_alike_in_two_processes_and_replay_feeds_it() {
    let home = tempfile::tempdir().expect("home");
    setup(home.path(), &[]);
    let members = ["ensemble", "create", "market", "--members", "technical,fundamental,sentiment"];
    ok(quorum(home.path(), &[&members[..], &["--weights", "0.2,0.5,0.3", "--inactive"]].concat()));
    let shown: serde_json::Value =
        serde_json::from_str(&ok(quorum(home.path(), &["ensemble", "show", "market"]))).expect("ensemble json");
    assert_eq!(shown["version"], 1, "an inactive version does not serve: {shown}");
    let start = ["experiment", "start", "ab", "--ensemble", "market", "--control", "1", "--treatment", "2"];
    ok(quorum(home.path(), &[&start[..], &["--steps", "50", "--min-outcomes", "50"]].concat()));
    let row = common::holdout_features(1).remove(0);
    let features = serde_json::to_string(&row.iter().collect::<std::collections::BTreeMap<_, _>>()).expect("json");
    for key in ["acct-1", "acct-2", "acct-3", "acct-4"] {
        let arm = |out: String| {
            let p: serde_json::Value = serde_json::from_str(&out).expect("prediction json");
            assert_eq!(p["experiment"]["name"], "ab", "{p}");
            p["experiment"]["arm"].as_str().expect("arm").to_string()
        };
        let predict = ["predict", "market", "--features", &features, "--routing-key", key];
        // Each run is its own process with its own engine.
        assert_eq!(arm(ok(quorum(home.path(), &predict))), arm(ok(quorum(home.path(), &predict))), "{key}");
    }
    let replayed = ok(quorum(home.path(), &["replay", "market", "--data", &holdout(), "--outcome", "next_day_up"]));
    assert!(replayed.contains("experiment ab: "), "{replayed}");
    let status: serde_json::Value =
        serde_json::from_str(&ok(quorum(home.path(), &["experiment", "status", "ab", "--json"]))).expect("status json");
    for field in ["name", "state", "step", "arms", "p_value", "decisions"] {
        assert!(status.get(field).is_some(), "{field} missing: {status}");
    }
    assert!(status["arms"]["treatment"]["outcomes"].as_u64().expect("count") > 100, "{status}");
    let first = &status["decisions"][0];
    assert!(first["at"].is_string() && first["action"] == "started" && first["reason"].is_string(), "{status}");
    let text = ok(quorum(home.path(), &["experiment", "status", "ab"]));
    assert!(text.contains("confidence sequence") || text.contains("decisions:"), "{text}");
    ok(quorum(home.path(), &["experiment", "stop", "ab", "--reason", "test over"]));
    let list = ok(quorum(home.path(), &["experiment", "list", "--json"]));
    assert!(list.contains("\"stopped\""), "{list}");
    let again = quorum(home.path(), &["experiment", "pause", "ab"]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("error[config]"));
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let home = tempfile::tempdir().unwrap();
    setup(home.path(), &[]);
    ok(quorum(home.path(), &["replay", "market", "--data", &holdout(), "--outcome", "next_day_up"]));
    let features: serde_json::Map<String, serde_json::Value> =
        common::holdout_features(1).remove(0).iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
    let features = serde_json::Value::Object(features).to_string();
    for args in [
        vec!["metrics", "market", "--json"],
        vec!["predict", "market", "--features", &features],
        vec!["models", "list", "--json"],
    ] {
        // The reader is gone before the command prints (it loads models first): `quorum ... | head -0`.
        let mut child = Command::new(env!("CARGO_BIN_EXE_quorum"))
            .arg("--home")
            .arg(home.path())
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(141), "{args:?}");
    }
}

#[test]
fn a_mistyped_home_is_not_created_by_reading_commands() {
    let parent = tempfile::tempdir().unwrap();
    let typo = parent.path().join("typo");
    for args in [
        &["models", "list"][..],
        &["ensemble", "list"],
        &["metrics", "market"],
        &["predict", "market", "--features", "{}"],
    ] {
        assert_clean_failure(&quorum(&typo, args), "error[not_found]: quorum home not found");
        assert!(!typo.exists(), "{args:?} made the home");
    }
}

#[test]
fn versions_out_of_range_are_refused_on_the_command_line() {
    let home = tempfile::tempdir().unwrap();
    let file = common::model_file("technical");
    let features = common::features_of("technical").join(",");
    for bad in ["4294967295", "0", "-1", "1.5"] {
        let out = quorum(
            home.path(),
            &["models", "register", "t", "--file", file.to_str().unwrap(), "--features", &features, "--version", bad],
        );
        assert!(!out.status.success(), "{bad} accepted");
        assert!(!home.path().join("models/t").exists(), "{bad}");
    }
}

#[test]
fn features_come_from_a_file_or_stdin_and_a_repeated_name_is_refused() {
    let home = tempfile::tempdir().unwrap();
    setup(home.path(), &[]);
    let features: serde_json::Map<String, serde_json::Value> =
        common::holdout_features(1).remove(0).iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
    let text = serde_json::Value::Object(features).to_string();
    let inline: serde_json::Value =
        serde_json::from_str(&ok(quorum(home.path(), &["predict", "market", "--features", &text]))).unwrap();
    let file = home.path().join("features.json");
    std::fs::write(&file, &text).unwrap();
    let at = format!("@{}", file.display());
    let from_file: serde_json::Value =
        serde_json::from_str(&ok(quorum(home.path(), &["predict", "market", "--features", &at]))).unwrap();
    assert_eq!(from_file["prediction"], inline["prediction"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .arg("--home")
        .arg(home.path())
        .args(["predict", "market", "--features", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let from_stdin: serde_json::Value = serde_json::from_str(&ok(child.wait_with_output().unwrap())).unwrap();
    assert_eq!(from_stdin["prediction"], inline["prediction"]);
    let repeated = text.replacen('{', "{\"vix\": 1.0, ", 1);
    assert_clean_failure(
        &quorum(home.path(), &["predict", "market", "--features", &repeated]),
        "\"vix\" is given twice",
    );
}

#[test]
fn backtest_uses_the_ensembles_regimes_and_refuses_data_it_cannot_score() {
    let home = tempfile::tempdir().unwrap();
    setup(home.path(), &[]);
    let out =
        ok(quorum(home.path(), &["backtest", "market", "--data", &holdout(), "--outcome", "next_day_up", "--json"]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report["methods"].get("regime").is_none(), "{report}");
    assert!(report["notes"][0].as_str().unwrap().contains("no regime method"), "{report}");
    // Data without the default regime feature works; data with no scorable row is an error.
    let data = home.path().join("unscorable.csv");
    let (columns, rows) = common::holdout();
    let body: Vec<String> =
        rows.iter().take(5).map(|r| r.iter().map(|_| "x".to_string()).collect::<Vec<_>>().join(",")).collect();
    std::fs::write(&data, format!("{}\n{}\n", columns.join(","), body.join("\n"))).unwrap();
    let failed =
        quorum(home.path(), &["backtest", "market", "--data", data.to_str().unwrap(), "--outcome", "next_day_up"]);
    assert_clean_failure(&failed, "no row of 5 could be scored");
}

/// The volatility example (examples/volatility, built by `make volatility-example`): a regression
/// ensemble of GARCH, HAR-RV and EWMA forecasts of next-day S&P 500 variance.
#[test]
fn the_volatility_example_backtests_every_rule_against_the_hindsight_oracles() {
    let home = tempfile::tempdir().unwrap();
    let dir = common::repo().join("examples/volatility");
    let file = |m: &str| dir.join(format!("{m}.onnx")).to_str().unwrap().to_string();
    for (model, features) in [("garch", "garch_var"), ("ewma", "ewma_var"), ("har", "rv_d,rv_w,rv_m")] {
        let path = file(model);
        let args = ["models", "register", model, "--file", &path, "--features", features];
        ok(quorum(home.path(), &[&args[..], &["--task", "regression", "--output", "variable"]].concat()));
    }
    let create = ["ensemble", "create", "vol", "--members", "garch,har,ewma", "--strategy", "mlpol"];
    assert_clean_failure(
        &quorum(home.path(), &[&create[..], &["--strategy-options", r#"{"flor": 0}"#]].concat()),
        "unknown field `flor`",
    );
    assert_clean_failure(&quorum(home.path(), &[&create[..], &["--floor", "1.5"]].concat()), "floor is 1.5");
    ok(quorum(home.path(), &[&create[..], &["--strategy-options", r#"{"floor": 0.02, "gradient": true}"#]].concat()));
    let shown: serde_json::Value =
        serde_json::from_str(&ok(quorum(home.path(), &["ensemble", "show", "vol"]))).unwrap();
    assert_eq!(shown["online"]["floor"], 0.02, "{shown}");
    assert_eq!(shown["strategy"], "mlpol");

    let data = dir.join("volatility.csv");
    let backtest = |extra: &[&str]| -> serde_json::Value {
        let args = ["backtest", "vol", "--data", data.to_str().unwrap(), "--outcome", "next_var", "--json"];
        let report_dir = home.path().join("bt");
        let dirs = ["--regime-feature", "ret_1d", "--report-dir", report_dir.to_str().unwrap()];
        serde_json::from_str(&ok(quorum(home.path(), &[&args[..], &dirs[..], extra].concat()))).unwrap()
    };
    let report = backtest(&["--floor", "0"]);
    assert_eq!(report["task"], "regression");
    for method in ["garch", "har", "ewma", "equal", "hedge", "boa", "mlpol", "ewa", "stacking", "blending", "regime"] {
        for key in ["rmse", "mae", "mape"] {
            assert!(report["methods"][method][key].as_f64().unwrap() > 0.0, "{method}.{key}: {report}");
        }
    }
    for oracle in ["best-member", "best-convex"] {
        assert_eq!(report["oracles"][oracle]["hindsight"], true);
        assert!(report["oracles"][oracle]["metrics"]["rmse"].is_number());
        assert!(report["regimes"]["high"][oracle]["rmse"].is_number());
    }
    // A fixed rate changes what hedge and ewa do; boa and mlpol have their own rates.
    let fixed = backtest(&["--eta", "1e-9", "--floor", "0"]);
    assert_ne!(fixed["methods"]["ewa"], report["methods"]["ewa"]);
    assert_eq!(fixed["methods"]["mlpol"], report["methods"]["mlpol"]);
}

#[test]
fn leftovers_of_a_killed_registration_are_removed_with_a_warning() {
    let home = tempfile::tempdir().unwrap();
    let file = common::model_file("technical");
    let features = common::features_of("technical").join(",");
    ok(quorum(home.path(), &["models", "register", "t", "--file", file.to_str().unwrap(), "--features", &features]));
    let dead = (4_000_000..4_194_304).find(|pid| !Path::new(&format!("/proc/{pid}")).exists()).unwrap();
    let staging = home.path().join(format!("models/t/.tmp-2-{dead}-0-1"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("model.onnx"), vec![0u8; 1000]).unwrap();
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::open(&staging).unwrap().set_modified(an_hour_ago).unwrap();
    let out = quorum(home.path(), &["models", "list"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("removed the leftover of an interrupted write") && stderr.contains("1000"), "{stderr}");
    assert!(!staging.exists());
}

#[test]
fn beside_a_process_holding_the_state_models_and_ensembles_can_be_added_but_state_writers_are_refused() {
    let home = tempfile::tempdir().unwrap();
    setup(home.path(), &[]);
    // This test process plays `quorum serve`: its engine holds the home's SQLite state.
    let server = quorum::InferenceEngine::builder(home.path()).build().unwrap();
    let file = common::model_file("technical");
    let features = common::features_of("technical").join(",");
    ok(quorum(
        home.path(),
        &["models", "register", "technical", "--file", file.to_str().unwrap(), "--features", &features],
    ));
    ok(quorum(home.path(), &["ensemble", "create", "solo", "--members", "technical"]));
    let refused = quorum(home.path(), &["metrics", "market"]);
    assert_clean_failure(&refused, "error[locked]");
    assert!(String::from_utf8_lossy(&refused.stderr).contains(&format!("pid {}", std::process::id())));
    drop(server);
}

#[test]
fn models_as_exporters_write_them_register_on_the_command_line() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let fixture =
        |name: &str| common::repo().join(format!("tests/fixtures/exporters/{name}.onnx")).to_string_lossy().to_string();
    // A DataFrame export: one input per column, named as the features, and a ZipMap.
    let frame = fixture("frame_pipeline");
    let printed = ok(quorum(h, &["models", "register", "frame", "--file", &frame, "--features", "ret_1d,ret_5d,vix"]));
    assert!(printed.contains("joined into one [batch, 3] input") && printed.contains("ZipMap"), "{printed}");
    // Inputs that need a map: refused without it (one line, naming the flag), taken with it.
    let grouped = fixture("grouped_inputs");
    let register = ["models", "register", "grouped", "--file", &grouped, "--features", "ret_1d,ret_5d,vix"];
    assert_clean_failure(&quorum(h, &register), "--inputs");
    assert_clean_failure(&quorum(h, &[&register[..], &["--inputs", "x1"]].concat()), "error[config]");
    assert_clean_failure(&quorum(h, &[&register[..], &["--inputs", "x1=ret_1d;x2=vix"]].concat()), "takes 2 columns");
    ok(quorum(h, &[&register[..], &["--inputs", "x1=ret_1d,ret_5d;x2=vix"]].concat()));
    let shown: serde_json::Value =
        serde_json::from_str(&ok(quorum(h, &["models", "show", "grouped", "--json"]))).unwrap();
    assert_eq!(shown["metadata"]["inputs"], "x1=ret_1d,ret_5d;x2=vix");
    // A batch fixed to one row is shown, and a string input is refused saying what to change.
    let fixed = fixture("fixed_batch1");
    let printed = ok(quorum(h, &["models", "register", "fixed", "--file", &fixed, "--features", "ret_1d,ret_5d,vix"]));
    assert!(printed.contains("it takes 1 row(s) per call"), "{printed}");
    let shown: serde_json::Value =
        serde_json::from_str(&ok(quorum(h, &["models", "show", "fixed", "--json"]))).unwrap();
    assert_eq!(shown["max_batch"], 1);
    let strings = fixture("string_input");
    let refused = quorum(h, &["models", "register", "s", "--file", &strings, "--features", "ret_1d,sector"]);
    assert_clean_failure(&refused, "takes strings");
}
