"""tritonclient[http] (PyPI), unmodified, against a running `quorum serve` at $QUORUM_URL serving the
`market` ensemble: health, metadata, binary (the client's default) and JSON tensors, FP64 inputs, the
request id, and errors raised as the client's own exception."""

import csv
import os

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

URL = os.environ["QUORUM_URL"]
REPO = os.environ["QUORUM_REPO"]


@pytest.fixture(scope="module")
def client():
    return httpclient.InferenceServerClient(url=URL)


def holdout(rows):
    with open(os.path.join(REPO, "examples/data/holdout.csv")) as f:
        data = [r for r in csv.DictReader(f)][:rows]
    return data


def inputs_for(client, rows, dtype=np.float32, binary=True):
    meta = client.get_model_metadata("market")
    data = holdout(rows)
    inputs = []
    for spec in meta["inputs"]:
        values = np.array([float(r[spec["name"]]) for r in data], dtype=dtype)
        t = httpclient.InferInput(spec["name"], list(values.shape), "FP64" if dtype == np.float64 else "FP32")
        t.set_data_from_numpy(values, binary_data=binary)
        inputs.append(t)
    return inputs


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("market")
    server = client.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("market")
    assert [o["name"] for o in meta["outputs"]] == ["prediction", "confidence"]
    assert len(meta["inputs"]) == 21


def test_binary_inference_with_the_client_defaults(client):
    result = client.infer("market", inputs_for(client, 8), request_id="abc-1")
    prediction = result.as_numpy("prediction")
    confidence = result.as_numpy("confidence")
    assert prediction.shape == (8,) and prediction.dtype == np.float32
    assert np.all((prediction >= 0) & (prediction <= 1))
    assert np.all((confidence >= 0) & (confidence <= 1))
    assert result.get_response()["id"] == "abc-1"


def test_json_and_binary_agree_and_fp64_converts(client):
    outputs = [httpclient.InferRequestedOutput("prediction", binary_data=False)]
    as_json = client.infer("market", inputs_for(client, 5, binary=False), outputs=outputs).as_numpy("prediction")
    as_binary = client.infer("market", inputs_for(client, 5)).as_numpy("prediction")
    as_fp64 = client.infer("market", inputs_for(client, 5, dtype=np.float64)).as_numpy("prediction")
    np.testing.assert_allclose(as_json, as_binary, rtol=1e-6)
    np.testing.assert_allclose(as_fp64, as_binary, rtol=1e-6)


def test_versioned_inference(client):
    result = client.infer("market", inputs_for(client, 2), model_version="1")
    assert result.get_response()["model_version"] == "1"


def test_errors_are_the_client_s_exception(client):
    with pytest.raises(InferenceServerException) as missing:
        client.infer("market", inputs_for(client, 2)[:-1])
    assert "missing input" in str(missing.value)
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("no-such-model")
    assert not client.is_model_ready("no-such-model")
