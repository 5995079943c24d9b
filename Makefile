# oicp-p2p — `make run` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
UV_VERSION := 0.13.9
VENV := .venv
PY := $(VENV)/bin/python
UV := .uv/bin/uv
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run run-tls certs test lint format docs check-docs services clean help bench soak

help:
	@echo "make run    - demo network: CPO node DE*GEF (:7001) and EMP node DE-GDF (:8001)"
	@echo "make run-tls - the same with mutual TLS on both OICP ports (certificates from make certs)"
	@echo "make certs  - demo CA, server and client certificates in deploy/certs/"
	@echo "make test   - the whole test suite against the local RabbitMQ and Redis"
	@echo "make lint   - ruff"
	@echo "make docs   - regenerate docs/ from the code: asyncapi.yaml, events.md, configuration.md, openapi/*.json"
	@echo "make bench  - benchmarks vs their baselines (BENCH_ARGS=\"status_fanout --large\"; see bench/README.md)"
	@echo "make soak   - the long runs: API fuzzing and model properties with many more examples, RabbitMQ stopped and started under load (alone on the machine)"

# uv lives in its own small venv so that `uv sync` never removes it from the project venv.
$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

venv: $(VENV)/.synced

services:
	@deploy/scripts/ensure-services.sh

run: venv services
	$(PY) -m shared.node deploy/config/demo-cpo.yaml deploy/config/demo-emp.yaml --demo-backend deploy/config/demo-cpo.yaml

# Demo PKI (deploy/certs/ is generated, never committed); `make certs` again renews it, and running
# nodes reload the new files without a restart.
CERTS := deploy/certs

$(CERTS)/ca.pem: deploy/scripts/make-certs.sh
	deploy/scripts/make-certs.sh $(CERTS)

certs:
	deploy/scripts/make-certs.sh $(CERTS)

run-tls: venv services $(CERTS)/ca.pem
	$(PY) -m shared.node deploy/config/tls/demo-cpo.yaml deploy/config/tls/demo-emp.yaml --demo-backend deploy/config/tls/demo-cpo.yaml

test: venv services
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .

format: venv
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

# The hostile-input tests of `make test` with 20× (fuzzing) and 25× (model properties) the generated
# examples: about an hour here, estimated from the default run (15 examples per operation: ~2.5 min).
soak: venv services
	OICP_P2P_FUZZ_EXAMPLES=300 OICP_P2P_PROPERTY_EXAMPLES=1000 $(PY) -m pytest -q -p no:cacheprovider \
		tests/e2e/test_fuzz_openapi.py tests/unit/test_oicp_model_properties.py
	# stops and starts the machine's RabbitMQ: nothing else may use it meanwhile
	$(PY) -m pytest -q -p no:cacheprovider -m broker_restart tests/e2e/test_kill_under_load.py

bench: venv services
	$(PY) -m bench $(BENCH_ARGS)

# Everything under docs/ that is generated from the code (unit tests fail when a committed file is stale).
docs: venv
	$(PY) -m shared.bus.asyncapi > docs/asyncapi.yaml
	$(PY) -m shared.bus.catalogue > docs/events.md
	$(PY) -m shared.config_reference > docs/configuration.md
	$(PY) -m services.gateway.openapi docs/openapi

clean:
	rm -rf $(VENV) .uv .pytest_cache .ruff_cache
