# scorefn: the two commands a newcomer types are `make up` and `make test`.
# Every target installs what it needs (Python deps into .venv, Azurite into node_modules).

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
IAC    := .venv-iac
# checkov pins pycep-parser==0.5.1; both stay out of the app venv (their pins clash with it).
IAC_STAMP := $(IAC)/.installed-checkov-3.3.30
MODELS := models/fraud/1/model.onnx models/fraud/2/model.onnx models/vision_classifier/1/model.onnx

.PHONY: up test lint typecheck models bench bench-pipeline install clean

up: install models
	$(VENV)/bin/scorefn up

test: install models lint typecheck $(IAC_STAMP)
	$(PY) -m pytest -q

install: $(STAMP) node_modules/.bin/azurite

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

$(IAC_STAMP):
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(IAC)/bin/python || $(PYTHON) -m venv $(IAC)
	$(IAC)/bin/python -m pip install -q --disable-pip-version-check checkov==3.3.30
	rm -f $(IAC)/.installed-*
	touch $@

node_modules/.bin/azurite: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

models: $(MODELS)

$(MODELS) &: $(STAMP) scripts/build_models.py scripts/build_vision.py
	$(PY) scripts/build_models.py --out models

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy shared functions function_app.py

bench: bench-pipeline

bench-pipeline: install models
	$(PY) bench/pipeline.py

clean:
	rm -rf .run .azurite .pytest_cache .mypy_cache .ruff_cache
