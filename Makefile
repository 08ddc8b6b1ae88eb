# quorum: every install step lives here. `make demo` and `make test` work on a fresh machine with
# Rust, Python 3 and access to PyPI (for the onnxruntime wheel).

PYTHON ?= python3
ORT_VERSION := 1.32.0
# The one version of the crate, the wheel and the npm package (tests/version.rs checks they agree).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# Older ONNX Runtime releases the test suite checks quorum against (the npm package ships 1.30).
ORT_COMPAT_VERSIONS := 1.30.0 1.31.0
VENV := .venv
VENV_STAMP := $(VENV)/.onnxruntime-$(ORT_VERSION)
ORT_DYLIB := $(firstword $(wildcard $(VENV)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*))
HOME_DIR := quorum-home
QUORUM := ./target/release/quorum --home $(HOME_DIR)
MODELS := examples/models

TECHNICAL_FEATURES := ret_1d,ret_5d,ret_20d,vol_20d,hl_range,rsi_14,volume_z,nasdaq_log_volume_chg
FUNDAMENTAL_FEATURES := default_spread,default_spread_chg,core_cpi_yoy,ff_mkt_rf,ff_smb,ff_hml,ff_rf,wti_ret_20d
SENTIMENT_FEATURES := vix,vix_chg_1d,vix_chg_5d,vix_rel_20d,vix_zscore_60d

# oha is built once per machine (a clean clone reuses it; it takes minutes to compile on 2 cores).
OHA_VERSION := 1.16.0
TOOLS_CACHE ?= $(HOME)/.cache/quorum-tools/oha-$(OHA_VERSION)
OHA := $(TOOLS_CACHE)/bin/oha
CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ_ROOT ?= $(HOME)/.cache/quorum-tools/cargo-fuzz-$(CARGO_FUZZ_VERSION)
CARGO_FUZZ := $(CARGO_FUZZ_ROOT)/bin/cargo-fuzz
FUZZ_TARGETS := csv features_json model_metadata ensemble_config onnx_decode http_bodies alert_rules
FUZZ_SECONDS ?= 10
VENV_SERVE := .venv-serve
VENV_SERVE_STAMP := $(VENV_SERVE)/.stamp-$(ORT_VERSION)
SERVE_PORT ?= 8080

.PHONY: demo test docs package monitoring-tools monitoring-check scale-tools postgres-test scale-out-check k8s-check venv venv-serve serve-demo load-serve remote-triton remote-mlserver ci-long ort-compat build models bench bench-python bench-node python-wheel python-test node-build node-test fuzz clean replica-memory load load-matrix onnx-proto quantization-reference volatility-example native-fixtures native-bench-model native-bench exporters-bench opset-history-check

venv: $(VENV_STAMP)
$(VENV_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet onnxruntime==$(ORT_VERSION)
	touch $@

# The server's test clients and its load-test peer: tritonclient[http,grpc] (the real clients; gRPC for
# remote-triton's transport comparison), FastAPI and
# uvicorn with onnxruntime (what a team would write instead), pytest.
venv-serve: $(VENV_SERVE_STAMP)
$(VENV_SERVE_STAMP):
	$(PYTHON) -m venv $(VENV_SERVE)
	$(VENV_SERVE)/bin/pip install --quiet "tritonclient[http,grpc]" numpy fastapi uvicorn onnxruntime==$(ORT_VERSION) pytest
	touch $@

# The `onnx` package whose operator schemas and version converter crates/onnx/src/history.rs is generated
# from (scripts/make_opset_history.py); `make test` checks that the committed table is current.
VENV_ONNX := .venv-onnx
ONNX_VERSION := 1.23.2
$(VENV_ONNX)/.stamp:
	$(PYTHON) -m venv $(VENV_ONNX)
	$(VENV_ONNX)/bin/pip install --quiet onnx==$(ONNX_VERSION)
	touch $@

opset-history-check: $(VENV_ONNX)/.stamp
	$(VENV_ONNX)/bin/python scripts/make_opset_history.py --check

# A real Triton Inference Server (inside PyPI's nvidia-pytriton) for the load comparison; Debian's
# Python 3.11, whose shared libpython pytriton's Triton needs.
VENV_TRITON := .venv-triton
$(VENV_TRITON)/.stamp:
	/usr/bin/python3.11 -m venv $(VENV_TRITON)
	$(VENV_TRITON)/bin/pip install --quiet nvidia-pytriton onnxruntime==$(ORT_VERSION) numpy
	touch $@

# oha, the HTTP load generator, built from crates.io (never a downloaded binary).
$(OHA):
	cargo install oha --version $(OHA_VERSION) --locked --root $(TOOLS_CACHE)

# Extracts libonnxruntime from older wheels into .ort/<version>/ (no install, no dependencies).
ort-compat: $(foreach v,$(ORT_COMPAT_VERSIONS),.ort/$(v)/.stamp)
.ort/%/.stamp: $(VENV_STAMP)
	mkdir -p .ort/wheels .ort/$*
	$(VENV)/bin/pip download --quiet --no-deps --only-binary=:all: --dest .ort/wheels onnxruntime==$*
	$(VENV)/bin/python scripts/extract_ort_dylib.py .ort/wheels/onnxruntime-$*-*.whl .ort/$*
	touch $@

build:
	cargo build --release

demo: venv build
	rm -rf $(HOME_DIR)
	$(QUORUM) models register technical --file $(MODELS)/technical.onnx --features $(TECHNICAL_FEATURES) --kind technical
	$(QUORUM) models register fundamental --file $(MODELS)/fundamental.onnx --features $(FUNDAMENTAL_FEATURES) --kind fundamental
	$(QUORUM) models register sentiment --file $(MODELS)/sentiment.onnx --features $(SENTIMENT_FEATURES) --kind sentiment
	$(QUORUM) models list
	$(QUORUM) ensemble create market --members technical,fundamental,sentiment --weights 0.4,0.4,0.2 --strategy soft-vote
	$(QUORUM) replay market --data examples/data/holdout.csv --outcome next_day_up

# Prometheus (promtool checks the exposition and the alert rules; a real server scrapes `quorum serve`
# in the tests) and headless Chromium (the status page's test), from Debian.
monitoring-tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v chromium >/dev/null || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus chromium)

# haproxy, from Debian: the load balancer in front of three replicas in the scale-out proof.
scale-tools:
	@command -v haproxy >/dev/null || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends haproxy)

# PostgreSQL as the state store, against the local server (127.0.0.1:5432, trust auth): here a test
# that cannot reach it fails instead of skipping. (`make test` runs them in `cargo test --all-targets`,
# where the server crate turns the feature on, with the same variable set.)
postgres-test:
	QUORUM_REQUIRE_POSTGRES=1 cargo test -p quorum --features postgres --test postgres

# The scale-out proof: three `quorum serve` replicas behind haproxy on one PostgreSQL, the held-out
# data replayed through the balancer, then again with kill -9 of a replica (scripts/scale_out.py).
scale-out-check: scale-tools
	cargo build -p quorum-cli
	$(PYTHON) scripts/scale_out.py --quorum target/debug/quorum

# The Kubernetes manifests against the Kubernetes schemas (offline, PyPI's kubernetes-validate, for
# the oldest and newest versions checked), then what ties them to the server (scripts/k8s_check.py).
VENV_K8S := .venv-k8s
K8S_MANIFESTS := $(filter-out deploy/k8s/kustomization.yaml,$(wildcard deploy/k8s/*.yaml))
$(VENV_K8S)/.stamp:
	$(PYTHON) -m venv $(VENV_K8S)
	$(VENV_K8S)/bin/pip install --quiet kubernetes-validate
	touch $@
k8s-check: $(VENV_K8S)/.stamp
	$(VENV_K8S)/bin/kubernetes-validate --strict --quiet -k 1.30.0 $(K8S_MANIFESTS)
	$(VENV_K8S)/bin/kubernetes-validate --strict --quiet -k 1.37.0 $(K8S_MANIFESTS)
	cargo build -p quorum-cli
	$(VENV_K8S)/bin/python scripts/k8s_check.py --quorum target/debug/quorum

# The Prometheus rules: syntax, their unit tests, and the example scrape configuration.
monitoring-check: monitoring-tools
	promtool check rules deploy/prometheus/alerts.yml
	cd deploy/prometheus && promtool test rules alerts.test.yml
	tmp=$$(mktemp -d) && echo token > $$tmp/quorum-token && \
	  sed "s|/etc/prometheus/quorum-token|$$tmp/quorum-token|; s|alerts.yml|$(CURDIR)/deploy/prometheus/alerts.yml|" \
	  deploy/prometheus/prometheus.yml > $$tmp/prometheus.yml && promtool check config $$tmp/prometheus.yml; \
	  status=$$?; rm -rf $$tmp; exit $$status

test: venv ort-compat venv-serve monitoring-tools monitoring-check k8s-check opset-history-check
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	QUORUM_REQUIRE_POSTGRES=1 cargo test --all-targets
	cargo test -p quorum --features ndarray --test ndarray
	cargo test -p quorum --features gpu --test gpu
	$(MAKE) scale-out-check
	RUSTDOCFLAGS="--cfg quorum_repo_readme" cargo test --doc
	$(MAKE) docs
	$(MAKE) python-test
	$(MAKE) node-test
	$(MAKE) fuzz

# The demo's home served over HTTP: starts `quorum serve` on 127.0.0.1:$(SERVE_PORT), predicts with curl
# through the REST API and the Open Inference Protocol, then stops it with SIGTERM.
serve-demo: demo
	$(QUORUM) serve --listen 127.0.0.1:$(SERVE_PORT) & echo $$! > .serve.pid; \
	for i in $$(seq 100); do curl -sf http://127.0.0.1:$(SERVE_PORT)/v2/health/ready >/dev/null && break; sleep 0.1; done; \
	curl -sf -X POST http://127.0.0.1:$(SERVE_PORT)/api/v1/ml/ensemble/market/predict -H 'content-type: application/json' \
	  -d '{"features": {"market_data": {"ret_1d": 0.0085, "ret_5d": -0.0026, "ret_20d": 0.0296, "vol_20d": 0.0844, "hl_range": 0.0083, "rsi_14": 58.9, "volume_z": 0.38, "nasdaq_log_volume_chg": 0.196, "default_spread": 0.77, "default_spread_chg": -0.08, "core_cpi_yoy": 0.0219, "ff_mkt_rf": 1.82, "ff_smb": 0.07, "ff_hml": 3.6, "ff_rf": 0.03, "wti_ret_20d": 0.0127, "vix": 12.85, "vix_chg_1d": -0.0886, "vix_chg_5d": 0.116, "vix_rel_20d": 0.0423, "vix_zscore_60d": -0.523}, "user_profile": {"id": "demo"}, "risk_parameters": {"max_position": 0.1}}}'; \
	status=$$?; echo; curl -sf http://127.0.0.1:$(SERVE_PORT)/v2/models/market | head -c 300; echo; \
	kill -TERM $$(cat .serve.pid); wait $$(cat .serve.pid); rm -f .serve.pid; exit $$status

# Load on `quorum serve` against the FastAPI peer and a real Triton at 1, 64, 1 000 and 10 000 connections (a table);
# fails if any quorum request failed, except 503 load shedding in the unpaced 10 000-connection cells (reported).
load-serve: build venv-serve $(OHA) $(VENV_TRITON)/.stamp
	$(VENV_SERVE)/bin/python benches/serve_load.py --quorum target/release/quorum --oha $(OHA) \
	  --triton-python $(VENV_TRITON)/bin/python --check

# Remote members against a real Triton (benches/remote_triton.py): registration, agreement with the
# local ensemble, overhead and 64 callers against raw tritonclient, a kill -9 under load. With the
# wheel `make python-test` built (built here when missing).
remote-triton: venv-serve $(VENV_TRITON)/.stamp
	test -n "$$(ls dist/quorum-*.whl 2>/dev/null)" || $(MAKE) python-wheel
	$(VENV_SERVE)/bin/pip install --quiet --force-reinstall --no-deps dist/quorum-*.whl
	$(VENV_SERVE)/bin/python benches/remote_triton.py --triton-python $(VENV_TRITON)/bin/python --check

# Remote members against a real MLServer with its sklearn runtime (benches/remote_mlserver.py): metadata
# without inputs or outputs, float64 answers, agreement with the skl2onnx export, a kill -9 under load.
VENV_MLSERVER := .venv-mlserver
$(VENV_MLSERVER)/.stamp:
	/usr/bin/python3.11 -m venv $(VENV_MLSERVER)
	$(VENV_MLSERVER)/bin/pip install --quiet "mlserver==1.7.1" "mlserver-sklearn==1.7.1" "uvloop<0.21" scikit-learn skl2onnx \
	  onnxruntime==$(ORT_VERSION)
	touch $@

remote-mlserver: $(VENV_MLSERVER)/.stamp
	test -n "$$(ls dist/quorum-*.whl 2>/dev/null)" || $(MAKE) python-wheel
	$(VENV_MLSERVER)/bin/pip install --quiet --force-reinstall --no-deps dist/quorum-*.whl
	$(VENV_MLSERVER)/bin/python benches/remote_mlserver.py --check

# The longer checks CI runs after `make test`.
ci-long: load-serve package remote-triton remote-mlserver

# The API documentation of every workspace crate, as docs.rs builds it (the core crate with every
# feature), with every rustdoc warning an error.
DOC_FEATURES := quorum/ndarray,quorum/postgres,quorum/gpu,quorum/cuda,quorum/tensorrt,quorum/nvml,quorum/remote-tls
docs:
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --features $(DOC_FEATURES)

# The crates meant for crates.io (quorum and the crates it is built from: quorum-onnx, quorum-native,
# quorum-oip; quorum-backtest, quorum-server, quorum-cli on top of it), packaged and built from the
# packaged sources as `cargo publish` would; the bindings and the fuzzer say publish = false.
# Every .crate file (compressed) must stay within the budget: 300 KB.
CRATE_BUDGET_BYTES := 300000
package:
	rm -f target/package/*.crate
	cargo package --workspace --exclude quorum-python --exclude quorum-node --allow-dirty
	status=0; for crate in target/package/*-$(VERSION).crate; do \
	  size=$$(stat -c %s $$crate); echo "$$(basename $$crate): $$size bytes"; \
	  test $$size -le $(CRATE_BUDGET_BYTES) || { echo "$$crate is over the $(CRATE_BUDGET_BYTES)-byte budget: check include in its Cargo.toml"; status=1; }; \
	done; exit $$status

# The Python package: an abi3 wheel built with maturin, installed into a fresh virtualenv (with its
# onnxruntime dependency from PyPI), then its tests, the README's Python example and a stub check.
PY_BUILD := .venv-py
PY_TEST := .venv-pytest
python-wheel:
	test -x $(PY_BUILD)/bin/python-zig || ($(PYTHON) -m venv $(PY_BUILD) && $(PY_BUILD)/bin/pip install --quiet "maturin>=1.5,<2" "ziglang>=0.13,<0.18")
	rm -rf dist
	# Linked by zig against glibc 2.28, so the wheel installs on Debian 10+, Ubuntu 20.04+ and RHEL 8.
	PATH=$(CURDIR)/$(PY_BUILD)/bin:$$PATH $(PY_BUILD)/bin/maturin build --release --strip --quiet --zig --compatibility manylinux_2_28 -m bindings/python/Cargo.toml -o dist/
	ls dist/quorum-*-manylinux_2_28_x86_64.whl
	test -x $(PY_BUILD)/bin/twine || $(PY_BUILD)/bin/pip install --quiet "twine>=5"
	$(PY_BUILD)/bin/twine check --strict dist/*

python-test: python-wheel
	rm -rf $(PY_TEST)
	$(PYTHON) -m venv $(PY_TEST)
	$(PY_TEST)/bin/pip install --quiet dist/quorum-*.whl pytest mypy
	cd bindings/python/tests && ../../../$(PY_TEST)/bin/python -m pytest -q -p no:cacheprovider
	$(PY_TEST)/bin/python -m mypy.stubtest quorum._quorum
	$(PY_TEST)/bin/python -m mypy --strict -p quorum
	# The tests and the READMEs' Python examples type-check under --strict against the installed stubs.
	cd bindings/python/tests && ../../../$(PY_TEST)/bin/python -m mypy --strict --cache-dir=/dev/null .
	tmp=$$(mktemp -d) && for readme in README.md bindings/python/README.md; do \
	  awk '/^```python$$/{f=1;next} /^```$$/{f=0} f' $$readme > $$tmp/$$(echo $$readme | tr / _ | sed 's/.md$$//').py; done && \
	  $(PY_TEST)/bin/python -m mypy --strict --cache-dir=/dev/null $$tmp/*.py; status=$$?; rm -rf $$tmp; exit $$status

# The Node package: napi-rs addon built by @napi-rs/cli, its generated native.d.ts checked against the
# committed one, packed with npm and installed from the tarball into an empty directory (with its
# onnxruntime-node dependency, whose postinstall download is skipped), then its node:test suite.
NODE_DIR := bindings/node
NODE_TEST := .node-test
node-build:
	cd $(NODE_DIR) && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error
	cd $(NODE_DIR) && npx napi build --release --strip --platform --no-js --dts native.d.ts --output-dir .
	git diff --exit-code -- $(NODE_DIR)/native.d.ts || (echo "native.d.ts drifted from the Rust code: commit the regenerated file"; exit 1)

node-test: node-build
	rm -rf $(NODE_TEST) && mkdir -p $(NODE_TEST)
	cd $(NODE_DIR) && npm pack --silent --pack-destination $(CURDIR)/$(NODE_TEST)
	echo '{"name": "quorum-node-test", "private": true}' > $(NODE_TEST)/package.json
	cd $(NODE_TEST) && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --loglevel=error ./quorum-engine-*.tgz
	NODE_PATH=$(CURDIR)/$(NODE_TEST)/node_modules QUORUM_REPO=$(CURDIR) node --test $(NODE_DIR)/test/*.test.js

bench-node: node-test
	NODE_PATH=$(CURDIR)/$(NODE_TEST)/node_modules QUORUM_REPO=$(CURDIR) node $(NODE_DIR)/bench.js

bench-python: python-test
	$(PY_TEST)/bin/python bindings/python/bench.py

bench: venv
	cargo bench --bench ensemble

# Regenerates crates/onnx/src/proto.rs from the vendored proto/onnx-ml.proto (prost + protox; no protoc).
onnx-proto:
	cd tools/onnx-proto && cargo run --release --quiet -- $(CURDIR)
	cargo fmt -- crates/onnx/src/proto.rs

# quorum's INT8 rewrites next to onnxruntime.quantization's on the same models and data (a table).
quantization-reference: build
	$(PYTHON) -m venv .venv-tools
	.venv-tools/bin/pip install --quiet onnxruntime==$(ORT_VERSION) onnx numpy
	.venv-tools/bin/python benches/quantization_reference.py target/release/quorum

# What an extra replica costs in memory, with and without shared weights, on a 68 MB MLP.
replica-memory:
	$(PYTHON) -m venv .venv-tools
	.venv-tools/bin/pip install --quiet onnx numpy
	mkdir -p target/wide
	.venv-tools/bin/python scripts/make_wide_model.py target/wide/wide.onnx
	cargo run --release --example replica_memory -- target/wide/wide.onnx

# Load on the example ensemble from async callers (see examples/load.rs for the flags).
load: venv
	cargo run --release --example load -- --concurrency 64 --seconds 6 --rounds 12 --batching on --baseline

# Batching on and off at 1, 8, 64, 512 callers, and 10 000 callers: a markdown table.
load-matrix: venv
	benches/load_matrix.sh

# Rebuilds the example models and replay data from arch's bundled market data (build time only).
models:
	$(PYTHON) -m venv .venv-train
	.venv-train/bin/pip install --quiet onnxruntime==$(ORT_VERSION) scikit-learn skl2onnx onnx arch pandas numpy
	.venv-train/bin/python scripts/train_example_models.py
	cd scripts && ../.venv-train/bin/python train_wide_model.py
	.venv-train/bin/python scripts/make_test_fixtures.py

# The exporter models the native-executor tests compare with ONNX Runtime (skl2onnx, onnxmltools for
# LightGBM and XGBoost, torch-style graphs; ai.onnx opsets 9 to 22): tests/fixtures/native, committed.
native-fixtures:
	$(PYTHON) -m venv .venv-train
	.venv-train/bin/pip install --quiet onnxruntime==$(ORT_VERSION) scikit-learn skl2onnx onnx onnxmltools lightgbm xgboost arch pandas numpy
	.venv-train/bin/python scripts/make_native_fixtures.py

# The 500-tree LightGBM model native_bench measures (target/quorum-models, 2 MB, not committed), then
# the native-vs-ONNX Runtime table: `make native-bench`.
native-bench-model:
	$(PYTHON) -m venv .venv-train
	.venv-train/bin/pip install --quiet onnxruntime==$(ORT_VERSION) scikit-learn skl2onnx onnx onnxmltools lightgbm arch pandas numpy
	.venv-train/bin/python scripts/make_native_fixtures.py --bench

native-bench: venv native-bench-model
	cargo run --release --example native_bench

# Issue 22's goals: ZipMap vs plain exports at 1 and 64 rows (`profile_loop ROWS zipmap`), a batch
# fixed to one row under 64 concurrent callers vs inline calls on as many threads as cores.
exporters-bench: venv
	cargo run --release --example profile_loop -- 1 zipmap
	cargo run --release --example profile_loop -- 64 zipmap
	cargo run --release --example exporters_bench

# Rebuilds the volatility example (GARCH, HAR-RV and EWMA forecasts of next-day S&P 500 variance from
# arch's bundled data) and backtests it with every online rule (build time only; the files are committed).
volatility-example: build
	$(PYTHON) -m venv .venv-train
	.venv-train/bin/pip install --quiet onnxruntime==$(ORT_VERSION) scikit-learn skl2onnx onnx arch pandas numpy
	.venv-train/bin/python scripts/train_volatility_example.py
	rm -rf target/volatility-home
	./target/release/quorum --home target/volatility-home models register garch --file examples/volatility/garch.onnx --features garch_var --task regression --output variable
	./target/release/quorum --home target/volatility-home models register ewma --file examples/volatility/ewma.onnx --features ewma_var --task regression --output variable
	./target/release/quorum --home target/volatility-home models register har --file examples/volatility/har.onnx --features rv_d,rv_w,rv_m --task regression --output variable
	./target/release/quorum --home target/volatility-home ensemble create vol --members garch,har,ewma --strategy mlpol
	./target/release/quorum --home target/volatility-home backtest vol --data examples/volatility/volatility.csv --outcome next_var --regime-feature ret_1d --report-dir target/volatility-report
	cp target/volatility-report/backtest.svg docs/backtest-volatility.svg

# Every fuzz target for FUZZ_SECONDS each on its committed corpus and seeds (in `make test`). Needs the
# nightly toolchain (`cargo +nightly`, which no registry here can fetch): without one it says so on one
# line and passes. cargo-fuzz comes from crates.io into a cache; no sanitizer (the code under test is
# safe Rust: a panic, an overflow or a runaway allocation is what is looked for), inputs up to 64 KiB.
fuzz:
	@if ! cargo +nightly --version >/dev/null 2>&1; then \
	  echo "fuzz: skipped: no nightly Rust toolchain (cargo +nightly) on this machine"; exit 0; fi; \
	test -x $(CARGO_FUZZ) || cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked --root $(CARGO_FUZZ_ROOT); \
	mkdir -p fuzz/artifacts; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  PATH=$(CARGO_FUZZ_ROOT)/bin:$$PATH cargo +nightly fuzz run --sanitizer none $$t fuzz/corpus/$$t fuzz/seeds/$$t \
	    -- -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
	    > fuzz/artifacts/$$t.log 2>&1 || { tail -40 fuzz/artifacts/$$t.log; echo "fuzz: $$t failed"; exit 1; }; \
	  echo "fuzz: $$t: $$(grep -h -o 'stat::number_of_executed_units: [0-9]*' fuzz/artifacts/$$t.log) in $(FUZZ_SECONDS) s, no crash"; \
	done

clean:
	cargo clean
	rm -rf $(HOME_DIR) .ort .tools $(TOOLS_CACHE) $(VENV_SERVE) $(VENV_TRITON) $(VENV_MLSERVER)
