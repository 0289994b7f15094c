# Every target bootstraps what it needs: a .venv and Debian's prometheus package.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all demo test lint generate bench clean prometheus

all: test

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

# Debian's prometheus package brings both `prometheus` and `promtool`.
prometheus:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
		echo "installing Debian's prometheus package"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	fi

demo: $(STAMP) prometheus
	$(PY) -m exporter.demo $(DEMO_ARGS)

lint: $(STAMP) prometheus
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m exporter.pack check

test: lint
	$(PY) -m pytest

generate: $(STAMP)
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. exporter/podresources/api.proto
	$(PY) -m exporter.pack generate

bench: $(STAMP) prometheus
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
