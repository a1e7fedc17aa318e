# One-command workflows. `make test` works on a fresh Debian machine with Python 3.11+,
# Java 17+ and Maven: it installs what is missing, then runs lint and the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
SYSTEM_DEPS := redis-server docker-compose
CODE := stream_learner consumers tools tests bench
MODEL ?= preprocessing.StandardScaler() | linear_model.LogisticRegression()
DATASET ?= Phishing
EVENTS ?= 200000
MODEL_SCOPE ?= global
PARTITIONS ?= 6
STACK_PORTS ?=

.PHONY: help venv system-deps kafka lint test bench stack-up stack-down stack-status topic demo clean

help:
	@echo "make test        lint + unit + integration tests (starts its own Kafka and Redis)"
	@echo "make demo        replay a dataset through a learner and a frozen predictor"
	@echo "make stack-up    Kafka on 127.0.0.1:9092 and Redis on 127.0.0.1:6379, for trying by hand"
	@echo "                 (STACK_PORTS='--kafka-port 19092 --controller-port 19093 --redis-port 16379')"
	@echo "make topic TOPIC=readings PARTITIONS=6   a topic with that many partitions on it"
	@echo "make stack-down  stop them"
	@echo "make lint        ruff + mypy --strict + import contracts"
	@echo "make bench       service vs raw River, bare Kafka and hand-rolled loops (MODEL=... DATASET=... EVENTS=... MODEL_SCOPE=key)"

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(INSTALLED)

# Debian packages the tests need: the Redis server, docker-compose to validate our compose file,
# and chromium with its driver for the dashboard's browser tests.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

kafka: venv
	$(BIN)/python tools/localstack.py fetch

lint: venv
	$(BIN)/ruff check $(CODE)
	$(BIN)/mypy $(CODE)
	$(BIN)/lint-imports --no-cache

test: venv system-deps kafka lint
	$(BIN)/pytest -n 2  # two workers, each with its own broker and Redis

bench: venv system-deps kafka
	$(BIN)/python -m bench.run --model "$(MODEL)" --dataset "$(DATASET)" --events $(EVENTS) \
	  --model-scope $(MODEL_SCOPE)

stack-up: venv system-deps kafka
	$(BIN)/python tools/localstack.py up $(STACK_PORTS)

stack-down: venv
	$(BIN)/python tools/localstack.py down $(STACK_PORTS)

stack-status: venv
	$(BIN)/python tools/localstack.py status $(STACK_PORTS)

topic: venv
	$(BIN)/python tools/localstack.py topic "$(TOPIC)" --partitions $(PARTITIONS) $(STACK_PORTS)

demo: venv system-deps kafka
	$(BIN)/python -m tools.demo

clean:
	rm -rf $(VENV) .stack .mypy_cache .ruff_cache .pytest_cache
