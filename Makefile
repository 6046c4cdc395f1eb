# The two commands a newcomer needs are `make demo` and `make test`; both set up what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf

.PHONY: help bootstrap softhsm demo test test-quick lint typecheck buf-lint stubs-check proto pytest k8s-check bench bench-hsm bench-protocol bench-tunnel bench-access bench-consent bench-audit bench-tls-key lock clean

help:
	@echo "make demo   - start the platform simulator and the sidecar, run a scripted IM client"
	@echo "make test   - lint, type check, buf lint, stub drift check and the whole test suite"
	@echo "make test-quick - lint and the tests not marked slow (a few minutes less; not for CI)"
	@echo "make proto  - regenerate sidecar/_proto from proto/"
	@echo "make k8s-check - render, validate and check k8s/, lint the Containerfile, start the dev pod"
	@echo "make bench  - issue 14 targets, PASS/MISS: sidecar vs direct, stand-in ceiling, RSS, soak (BENCH_ARGS=...)"
	@echo "make bench-hsm - SM2 signing rates through the HSM pool vs a raw session, SM4, SM3"
	@echo "make bench-protocol - 1101 round trips: scheme A with the HSM vs plain, and a breakdown"
	@echo "make bench-tunnel - CPU per platform call and p50/p99: httpx vs libcurl, HTTP/2 and 1.1"
	@echo "make bench-access - the peer-credential front and access filter vs direct gRPC"
	@echo "make bench-consent - the consent gate's per-call ledger read on SQLite and PostgreSQL"
	@echo "make bench-audit - audit records/s on SQLite and PostgreSQL, latency the trail adds to an RPC"
	@echo "make bench-tls-key - a full TLS handshake with the client key in the token vs a key file"
	@echo "make lock   - re-pin constraints.txt from the current .venv"

bootstrap:
	@scripts/bootstrap.sh

# SoftHSM 2.6.1 with our SM mechanisms, built once per machine and cached by the patch's hash.
softhsm:
	@hsm/softhsm/build.sh >/dev/null

demo: bootstrap softhsm
	YIBAO_PKCS11_MODULE="$$(hsm/softhsm/build.sh)" $(VENV)/bin/yibao-sidecar demo

test: bootstrap softhsm lint typecheck buf-lint stubs-check pytest

# The inner loop: lint and every test not marked `slow` (docs: README.md). `make test` stays the
# whole suite and is what CI runs.
test-quick: bootstrap softhsm lint
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

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

# Part of `make test` (tests/k8s runs inside pytest); on its own for quick manifest edits.
k8s-check: bootstrap softhsm
	$(VENV)/bin/pytest tests/k8s

# Benchmarks print figures; they are commands, never timed tests.
bench: bootstrap softhsm
	$(PY) benchmarks/bench_sidecar.py $(BENCH_ARGS)

bench-hsm: bootstrap softhsm
	$(PY) benchmarks/bench_hsm.py

bench-protocol: bootstrap softhsm
	$(PY) benchmarks/bench_protocol.py

bench-tunnel: bootstrap
	$(PY) benchmarks/bench_tunnel.py

bench-access: bootstrap
	$(PY) benchmarks/bench_access.py

bench-consent: bootstrap
	$(PY) benchmarks/bench_consent.py

bench-audit: bootstrap softhsm
	$(PY) benchmarks/bench_audit.py

bench-tls-key: bootstrap softhsm
	$(PY) benchmarks/bench_tls_handshake.py

proto: bootstrap
	$(PY) scripts/gen_protos.py

lock:
	$(VENV)/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
