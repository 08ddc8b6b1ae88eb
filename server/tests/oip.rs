//! The Open Inference Protocol: health, metadata, readiness and inference in JSON and with the binary
//! tensor extension (FP32, FP64 and INT64 inputs), checked against the library's own predictions;
//! `tritonclient` itself drives the same routes in `server/tests/python/test_tritonclient.py`.

mod support;

use quorum::Batch;
use support::{common, send, Running};

fn holdout_columns(rows: usize) -> (Vec<String>, Vec<Vec<f32>>) {
    let features = common::holdout_features(rows);
    let names: Vec<String> = features[0].iter().map(|(k, _)| k.to_string()).collect();
    let columns =
        names.iter().map(|n| features.iter().map(|f| f.iter().find(|(k, _)| k == n).unwrap().1).collect()).collect();
    (names, columns)
}

fn expected(server: &Running, names: &[String], columns: &[Vec<f32>]) -> Vec<f32> {
    let named: Vec<(&str, &[f32])> = names.iter().map(String::as_str).zip(columns.iter().map(Vec::as_slice)).collect();
    server.state().engine().predict_batch("market", &Batch::columnar(&named).unwrap()).unwrap().predictions
}

#[test]
fn metadata_lists_one_input_per_feature_and_the_two_outputs() {
    let server = Running::market(|_| {});
    let v2 = server.get("/v2").json();
    assert_eq!(v2["name"], "quorum");
    assert!(v2["extensions"].as_array().unwrap().contains(&serde_json::json!("binary_tensor_data")));
    let meta = server.get("/v2/models/market").json();
    let features = server.state().engine().ensemble("market").unwrap().feature_names();
    let inputs: Vec<&str> = meta["inputs"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(inputs, features.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["datatype"] == "FP32" && i["shape"] == serde_json::json!([-1])));
    let outputs: Vec<&str> = meta["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(outputs, ["prediction", "confidence"]);
    assert_eq!(meta["versions"], serde_json::json!(["1"]));
    assert_eq!(server.get("/v2/models/market/versions/1").status, 200);
    assert_eq!(server.get("/v2/models/market/ready").status, 200);
    assert_eq!(server.get("/v2/models/market/versions/1/ready").status, 200);
    assert_eq!(server.get("/v2/models/nothing/ready").status, 404);
    let absent = server.get("/v2/models/nothing");
    assert_eq!(absent.status, 404);
    assert!(absent.json()["error"].as_str().unwrap().contains("nothing"));

    // A registered model shows its own ONNX input and outputs.
    let model = server.get("/v2/models/technical").json();
    assert_eq!(model["platform"], "onnxruntime_onnx");
    assert_eq!(model["inputs"][0]["datatype"], "FP32");
    assert_eq!(model["inputs"][0]["shape"][1], 8);
    assert!(model["outputs"].as_array().unwrap().iter().any(|o| o["name"] == "probabilities"));
}

#[test]
fn json_inference_matches_the_library_and_echoes_the_id() {
    let server = Running::market(|_| {});
    let (names, columns) = holdout_columns(4);
    let inputs: Vec<serde_json::Value> = names
        .iter()
        .zip(&columns)
        .enumerate()
        .map(|(i, (n, c))| {
            // Alternate the accepted shapes and datatypes: [rows] FP32, [rows, 1] FP64 nested.
            if i % 2 == 0 {
                serde_json::json!({"name": n, "shape": [c.len()], "datatype": "FP32", "data": c})
            } else {
                let nested: Vec<Vec<f64>> = c.iter().map(|&v| vec![f64::from(v)]).collect();
                serde_json::json!({"name": n, "shape": [c.len(), 1], "datatype": "FP64", "data": nested})
            }
        })
        .collect();
    let request = serde_json::json!({"id": "req-42", "inputs": inputs});
    let reply = server.post("/v2/models/market/infer", &request.to_string());
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let answer = reply.json();
    assert_eq!(answer["id"], "req-42");
    assert_eq!(answer["model_name"], "market");
    assert_eq!(answer["model_version"], "1");
    let predictions: Vec<f32> =
        answer["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(answer["outputs"][0]["name"], "prediction");
    assert_eq!(answer["outputs"][0]["shape"], serde_json::json!([4]));
    assert_eq!(predictions, expected(&server, &names, &columns));
    assert_eq!(answer["outputs"][1]["name"], "confidence");
}

#[test]
fn binary_tensors_in_and_out() {
    let server = Running::market(|_| {});
    let (names, columns) = holdout_columns(3);
    let mut inputs = Vec::new();
    let mut tail = Vec::new();
    for (n, c) in names.iter().zip(&columns) {
        inputs.push(serde_json::json!({"name": n, "shape": [c.len()], "datatype": "FP32", "parameters": {"binary_data_size": c.len() * 4}}));
        tail.extend(c.iter().flat_map(|v| v.to_le_bytes()));
    }
    let header = serde_json::json!({"inputs": inputs, "outputs": [{"name": "prediction", "parameters": {"binary_data": true}}, {"name": "confidence"}]}).to_string();
    let mut body = header.clone().into_bytes();
    body.extend(&tail);
    let length = header.len().to_string();
    let reply = send(
        server.addr,
        "POST",
        "/v2/models/market/versions/1/infer",
        &[("inference-header-content-length", &length), ("content-type", "application/octet-stream")],
        &body,
    );
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let json_length: usize = reply.header("inference-header-content-length").unwrap().parse().unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&reply.body[..json_length]).unwrap();
    assert_eq!(answer["outputs"][0]["parameters"]["binary_data_size"], 12);
    assert!(answer["outputs"][1]["data"].is_array(), "confidence was asked for in JSON");
    let predictions: Vec<f32> =
        reply.body[json_length..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(predictions, expected(&server, &names, &columns));

    // INT64 input in binary converts too (a whole-number feature row).
    let ints: Vec<i64> = vec![1, 2, 3];
    let mut inputs = Vec::new();
    let mut tail = Vec::new();
    for n in &names {
        inputs.push(
            serde_json::json!({"name": n, "shape": [3], "datatype": "INT64", "parameters": {"binary_data_size": 24}}),
        );
        tail.extend(ints.iter().flat_map(|v| v.to_le_bytes()));
    }
    let header = serde_json::json!({"inputs": inputs, "parameters": {"binary_data_output": true}}).to_string();
    let mut body = header.clone().into_bytes();
    body.extend(&tail);
    let reply = send(
        server.addr,
        "POST",
        "/v2/models/market/infer",
        &[("inference-header-content-length", &header.len().to_string())],
        &body,
    );
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let json_length: usize = reply.header("inference-header-content-length").unwrap().parse().unwrap();
    assert_eq!(reply.body.len() - json_length, 24, "both outputs in binary");
    let as_float: Vec<Vec<f32>> = names.iter().map(|_| vec![1.0, 2.0, 3.0]).collect();
    let predictions: Vec<f32> = reply.body[json_length..json_length + 12]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(predictions, expected(&server, &names, &as_float));
}

#[test]
fn bad_inference_requests_are_400_with_a_message() {
    let server = Running::market(|_| {});
    let (names, columns) = holdout_columns(2);
    let good: Vec<serde_json::Value> = names
        .iter()
        .zip(&columns)
        .map(|(n, c)| serde_json::json!({"name": n, "shape": [2], "datatype": "FP32", "data": c}))
        .collect();
    let mut missing = good.clone();
    missing.pop();
    let mut unknown = good.clone();
    unknown.push(serde_json::json!({"name": "bogus", "shape": [2], "datatype": "FP32", "data": [1, 2]}));
    let mut short = good.clone();
    short[0]["shape"] = serde_json::json!([3]);
    let mut strings = good.clone();
    strings[0]["datatype"] = serde_json::json!("BYTES");
    let cases = [
        (serde_json::json!({"inputs": missing}), "missing input"),
        (serde_json::json!({"inputs": unknown}), "unexpected input"),
        (serde_json::json!({"inputs": short}), "values for shape"),
        (serde_json::json!({"inputs": strings}), "not supported"),
        (serde_json::json!({"inputs": good, "outputs": [{"name": "label"}]}), "unknown output"),
    ];
    for (request, expected) in cases {
        let reply = server.post("/v2/models/market/infer", &request.to_string());
        let message = reply.json()["error"].as_str().unwrap().to_string();
        assert_eq!(reply.status, 400, "{message}");
        assert!(message.contains(expected), "{message} lacks {expected}");
    }
    let reply =
        send(server.addr, "POST", "/v2/models/market/infer", &[("inference-header-content-length", "99999")], b"{}");
    assert_eq!(reply.status, 400);
    assert_eq!(
        server.post("/v2/models/market/versions/7/infer", &serde_json::json!({"inputs": good}).to_string()).status,
        404
    );
    let model = server.post("/v2/models/technical/infer", &serde_json::json!({"inputs": good}).to_string());
    assert_eq!(model.status, 400);
    assert!(model.json()["error"].as_str().unwrap().contains("one-member ensemble"));
}

/// Runs the real `tritonclient[http]` against the server (the venv `make test` prepares).
#[test]
fn tritonclient_drives_the_server() {
    let python = common::repo().join(".venv-serve/bin/python");
    assert!(python.exists(), "{} is missing: run `make venv-serve` (make test does)", python.display());
    let server = Running::market(|_| {});
    let script = common::repo().join("server/tests/python/test_tritonclient.py");
    let output = std::process::Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&script)
        .env("QUORUM_URL", server.addr.to_string())
        .env("QUORUM_REPO", common::repo())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    assert!(text.contains("passed"), "{text}");
}
