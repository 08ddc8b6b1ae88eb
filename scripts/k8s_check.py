#!/usr/bin/env python3
"""Offline checks of deploy/k8s and deploy/docker beyond the Kubernetes schemas (which
`kubernetes-validate --strict` checks in `make k8s-check`): what ties the manifests to the server.

* every resource kustomization.yaml lists exists, and every manifest is listed;
* the ConfigMap's quorum.toml is accepted by `quorum serve --print-config` (the real parser);
* the probes use the server's v2 health routes, and the pod's grace period covers preStop + drain +
  grace from that quorum.toml;
* the HPA's custom metric is the one the Prometheus adapter rule defines, from a histogram the
  server exports;
* the Dockerfile runs as a non-root user with the ONNX Runtime version the Makefile uses.
Usage: k8s_check.py --quorum target/debug/quorum
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "deploy/k8s")


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def load(name):
    with open(os.path.join(K8S, name)) as f:
        return yaml.safe_load(f)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quorum", required=True)
    args = parser.parse_args()

    kustomization = load("kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {f for f in os.listdir(K8S) if f.endswith(".yaml") and f != "kustomization.yaml"}
    if listed != present:
        fail(f"kustomization.yaml lists {sorted(listed)}, the directory holds {sorted(present)}")

    config = load("configmap.yaml")["data"]["quorum.toml"]
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(config)
    out = subprocess.run([args.quorum, "serve", "--config", f.name, "--print-config"], capture_output=True, text=True)
    os.unlink(f.name)
    if out.returncode != 0:
        fail(f"quorum refuses the ConfigMap's quorum.toml: {out.stderr.strip()}")
    settings = tomllib.loads(out.stdout)

    deployment = load("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    if container["readinessProbe"]["httpGet"]["path"] != "/v2/health/ready":
        fail("the readiness probe is not /v2/health/ready")
    if container["livenessProbe"]["httpGet"]["path"] != "/v2/health/live":
        fail("the liveness probe is not /v2/health/live")
    port = int(settings["listen"].rsplit(":", 1)[1])
    if container["ports"][0]["containerPort"] != port:
        fail(f"containerPort {container['ports'][0]['containerPort']} but quorum.toml listens on {port}")
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    limits = settings["limits"]
    needed = pre_stop + (limits["shutdown_drain_ms"] + limits["shutdown_grace_ms"]) / 1000
    if pod["terminationGracePeriodSeconds"] < needed:
        fail(f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} < preStop + drain + grace = {needed}")
    if pod["securityContext"].get("runAsNonRoot") is not True:
        fail("the pod may run as root")
    secret_keys = set(load("secret.yaml")["stringData"])
    if not {"QUORUM_STATE", "QUORUM_ADMIN_TOKENS", "QUORUM_PREDICT_TOKENS"} <= secret_keys:
        fail(f"the Secret lacks some of QUORUM_STATE / QUORUM_ADMIN_TOKENS / QUORUM_PREDICT_TOKENS: {secret_keys}")

    hpa = load("hpa.yaml")
    custom = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    rules = yaml.safe_load(load("prometheus-adapter.yaml")["data"]["config.yaml"])["rules"]
    defined = {r["name"]["as"]: r["seriesQuery"] for r in rules}
    with open(os.path.join(ROOT, "docs/metrics.md")) as f:
        exported = f.read()
    for name in custom:
        if name not in defined:
            fail(f"the HPA reads {name}, which no adapter rule defines")
        series = re.match(r"'?(\w+?)(_bucket)?\{", defined[name]).group(1)
        if f"`{series}`" not in exported:
            fail(f"{name} comes from {series}, which docs/metrics.md does not list")
    if hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] < 60:
        fail("scale-down has no stabilisation window")

    with open(os.path.join(ROOT, "deploy/docker/Dockerfile")) as f:
        dockerfile = f.read()
    with open(os.path.join(ROOT, "Makefile")) as f:
        makefile = f.read()
    ort = re.search(r"^ORT_VERSION := (\S+)", makefile, re.M).group(1)
    if f"ARG ORT_VERSION={ort}" not in dockerfile:
        fail(f"the Dockerfile's ONNX Runtime is not the Makefile's {ort}")
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    if not user or user[-1].split(":")[0] in ("0", "root"):
        fail("the image runs as root")
    print(f"k8s: {len(present)} manifests listed, quorum.toml accepted, probes, grace period ({needed:g} s needed, "
          f"{pod['terminationGracePeriodSeconds']} s given), HPA metric {custom} defined, image non-root with ONNX Runtime {ort}")


if __name__ == "__main__":
    main()
