# strata: every command a user or CI runs. `make help` lists them.
CARGO  ?= cargo
PYTHON ?= python3
EXP    ?= correlation
# A Python with torch + transformers, for the reference scripts and the benchmark peer.
REF_PYTHON ?= $(shell for p in $(PYTHON) /opt/refpy/bin/python; do $$p -c 'import torch, transformers' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: help build test lint bench fixtures parity-124m report validate

help:
	@echo "make build          release build of target/release/strata"
	@echo "make report EXP=X   run experiments/X.yaml -> reports/X/ (MODEL=... to override the model)"
	@echo "make validate       check every experiments/*.yaml"
	@echo "make test           fmt + clippy + every test (no torch needed)"
	@echo "make bench          forward tokens/s vs transformers (if a torch Python is found)"
	@echo "make fixtures       regenerate test fixtures (needs torch + transformers)"
	@echo "make parity-124m    parity on a 12x768 model vs transformers (needs torch)"

build:
	$(CARGO) build --release

report: build
	target/release/strata report experiments/$(EXP).yaml $(if $(MODEL),--model $(MODEL))

validate: build
	target/release/strata validate experiments/*.yaml

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

# Release mode: the numeric tests run full-size forwards, and CI then builds one profile.
test: lint
	$(CARGO) test --release

bench:
	$(CARGO) bench --bench forward -- --python "$(REF_PYTHON)"

fixtures:
	$(REF_PYTHON) tests/fixtures/make_gpt2_fixtures.py

parity-124m:
	$(REF_PYTHON) tests/fixtures/make_gpt2_fixtures.py --full target/gpt2-124m-random
	STRATA_FULL_MODEL=target/gpt2-124m-random $(CARGO) test --release --test gpt2_parity -- --ignored --nocapture
