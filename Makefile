# The two commands a newcomer needs are `make demo` and `make test`; both set up what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf

.PHONY: help bootstrap softhsm demo test lint typecheck buf-lint stubs-check proto pytest bench bench-hsm bench-protocol lock clean

help:
	@echo "make demo   - start the platform simulator and the sidecar, run a scripted IM client"
	@echo "make test   - lint, type check, buf lint, stub drift check and the whole test suite"
	@echo "make proto  - regenerate sidecar/_proto from proto/"
	@echo "make bench  - GetEnrollment/CheckEligibility through the sidecar vs straight to the platform"
	@echo "make bench-hsm - SM2 signing rates through the HSM pool vs a raw session, SM4, SM3"
	@echo "make bench-protocol - 1101 round trips: scheme A with the HSM vs plain, and a breakdown"
	@echo "make lock   - re-pin constraints.txt from the current .venv"

bootstrap:
	@scripts/bootstrap.sh

# SoftHSM 2.6.1 with our SM mechanisms, built once per machine and cached by the patch's hash.
softhsm:
	@hsm/softhsm/build.sh >/dev/null

demo: bootstrap softhsm
	YIBAO_PKCS11_MODULE="$$(hsm/softhsm/build.sh)" $(VENV)/bin/yibao-sidecar demo

test: bootstrap softhsm lint typecheck buf-lint stubs-check pytest

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

buf-lint:
	$(BUF) lint
	$(BUF) format --diff --exit-code

stubs-check:
	$(PY) scripts/gen_protos.py --check

pytest:
	$(VENV)/bin/pytest

# Benchmarks print figures; they are commands, never timed tests.
bench: bootstrap softhsm
	$(PY) benchmarks/bench_sidecar.py $(BENCH_ARGS)

bench-hsm: bootstrap softhsm
	$(PY) benchmarks/bench_hsm.py

bench-protocol: bootstrap softhsm
	$(PY) benchmarks/bench_protocol.py

proto: bootstrap
	$(PY) scripts/gen_protos.py

lock:
	$(VENV)/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
