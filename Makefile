# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
VIEWER := ui/viewer/dist/xraylab-viewer.js

.PHONY: install system-deps demo test test-unit bench bench-worklist bench-monitor bench-delivery chaos multinode lint up down status clean

install: system-deps $(STAMP) $(VIEWER)

# Debian packages the stack needs (MariaDB server, Chromium for UI tests, Java 17 + Maven for Kafka).
system-deps:
	@bash scripts/system-deps.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $(STAMP)

# The review app's image viewer (Cornerstone3D), built from ui/viewer's lock file; served by the app itself.
$(VIEWER): ui/viewer/package.json ui/viewer/package-lock.json ui/viewer/src/main.js
	bash scripts/build-viewer.sh

demo: install
	bash scripts/demo.sh

test: install
	bash scripts/test.sh

# The serving benchmark (not part of `make test`): writes benchmarks/results/serving.json.
bench: install
	bash scripts/bench.sh $(BENCH_ARGS)

# The chaos suite at full size (make test runs it with 150 uploads per fault).
chaos: install
	bash scripts/chaos.sh $(CHAOS_ARGS)

# The multi-node suite at full size (make test runs it with 150 uploads): two Ray nodes from `ray start`, one
# killed mid-stream of 1,000 uploads, then a training job through `ray job submit`.
multinode: install
	bash scripts/multinode.sh $(MULTINODE_ARGS)

test-unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

up: install
	bash cluster/local/up.sh

down:
	bash cluster/local/down.sh

status:
	bash cluster/local/status.sh

clean: down
	XRAYLAB_STATE_DIR=$(CURDIR)/.xraylab-test bash cluster/local/down.sh
	XRAYLAB_STATE_DIR=$(CURDIR)/.xraylab-bench bash cluster/local/down.sh
	XRAYLAB_STATE_DIR=$(CURDIR)/.xraylab-chaos bash cluster/local/down.sh
	rm -rf .xraylab .xraylab-test .xraylab-bench .xraylab-chaos

# The worklist's response time with 100,000 studies (MariaDB of its own stack, and SQLite):
# writes benchmarks/results/worklist.json.
bench-worklist: install
	bash scripts/bench.sh --worklist $(BENCH_ARGS)

# The deliverer emptying its outbox: ORU^R01 per second to one RIS, seconds per study to the PACS (Orthanc of its
# own stack): writes benchmarks/results/delivery.json.
bench-delivery: install
	bash scripts/bench.sh --delivery $(BENCH_ARGS)

# One drift run of the model monitor over 1,000 live images per kind of drift (SeaweedFS of its own stack):
# writes benchmarks/results/monitor.json.
bench-monitor: install
	bash scripts/bench.sh --monitor $(BENCH_ARGS)
