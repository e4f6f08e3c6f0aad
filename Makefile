# Every target that runs code first makes sure .venv exists and holds what pyproject.toml asks for,
# so that on a fresh machine `make run` and `make test` are all the set-up there is.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR := $(CURDIR)/.run
RUN_ARGS ?= --endpoint unix://$(RUN_DIR)/csi.sock --connector loop --loop-backing-dir $(RUN_DIR)/volumes --log-format console

.PHONY: all run test lint proto bench demo e2e-nvme clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	mkdir -p $(RUN_DIR)/volumes
	$(BIN)/rds-csi-node $(RUN_ARGS)

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check rds_csi tests bench demo
	$(BIN)/mypy

proto: $(STAMP)
	$(BIN)/python -m rds_csi.gen.regenerate

bench: $(STAMP)
	$(BIN)/python -m bench.run

# Real NVMe/TCP (nvmet-tcp target + nvme-tcp initiator) in a QEMU guest under TCG; needs root.
e2e-nvme: $(STAMP)
	$(BIN)/python -m tests.e2e_nvme.run

# A no-cluster walk through the plugin with the loop connector and the API-server emulator; needs root.
demo: $(STAMP)
	$(BIN)/python -m demo

clean:
	rm -rf $(VENV) $(RUN_DIR) .pytest_cache .mypy_cache .ruff_cache
