"""A real NVIDIA Triton Inference Server — the tritonserver binary inside PyPI's nvidia-pytriton, run
directly on a model repository — serving the example ensemble with its Python backend
(benches/triton_repository: the three ONNX models through onnxruntime, averaged 0.4/0.4/0.2, dynamic
batching), over the same Open Inference Protocol route quorum serves. The Triton peer of
benches/serve_load.py. (The wheel ships only Triton's Python backend, not its ONNX Runtime backend.)

    python benches/triton_peer.py HTTP_PORT     # grpc on HTTP_PORT+1, metrics on HTTP_PORT+2
"""

import json
import os
import pathlib
import shutil
import sys
import tempfile

import pytriton

REPO = pathlib.Path(__file__).resolve().parent.parent
PYTRITON = pathlib.Path(pytriton.__file__).parent


def main():
    port = int(sys.argv[1])
    work = pathlib.Path(tempfile.mkdtemp(prefix="quorum-triton-"))
    # Triton and its Python backend as pytriton lays them out, with the stub for this Python.
    server = work / "tritonserver"
    shutil.copytree(PYTRITON / "tritonserver", server, ignore=shutil.ignore_patterns("python_backend_stubs"))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy(PYTRITON / "tritonserver/python_backend_stubs" / version / "triton_python_backend_stub",
                server / "backends/python/")
    repository = work / "models"
    shutil.copytree(REPO / "benches/triton_repository", repository)
    manifest = json.load(open(REPO / "examples/models/manifest.json"))
    features = []
    for m in manifest["models"]:
        features += [f for f in m["features"] if f not in features]
    inputs = ",\n".join(f'  {{ name: "{f}", data_type: TYPE_FP32, dims: [1] }}' for f in features)
    site = next(p for p in sys.path if p.endswith("site-packages"))
    with open(repository / "market/config.pbtxt", "a") as config:
        config.write(f"input [\n{inputs}\n]\n")
        config.write(f'parameters {{ key: "site_packages" value: {{ string_value: "{site}" }} }}\n')
        config.write(f'parameters {{ key: "quorum_repo" value: {{ string_value: "{REPO}" }} }}\n')
    libs = PYTRITON / "tritonserver/external_libs"
    if not libs.exists():
        libs = PYTRITON.parent / "nvidia_pytriton.libs"
    # As pytriton does: this virtualenv's bin first on PATH, so the backend's stub finds its packages.
    env = dict(os.environ, LD_LIBRARY_PATH=f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}",
               PATH=f"{pathlib.Path(sys.exec_prefix) / 'bin'}:{os.environ['PATH']}")
    args = [str(server / "bin/tritonserver"), f"--model-repository={repository}", f"--http-port={port}",
            f"--grpc-port={port + 1}", f"--metrics-port={port + 2}", f"--backend-directory={server / 'backends'}",
            "--log-verbose=0", "--exit-on-error=true"]
    os.execve(args[0], args, env)


if __name__ == "__main__":
    main()
