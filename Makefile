# Loupe: the two commands are `make run` (the embedded default) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=
# TORCH=cpu: install torch first from PyTorch's CPU wheel index (about 200 MB), not the CUDA build
# pip takes from PyPI (several GB); for a machine without a GPU.  TORCH_INDEX names another index.
TORCH ?=
TORCH_INDEX ?= $(if $(filter cpu,$(TORCH)),https://download.pytorch.org/whl/cpu,)

.PHONY: run test lint serve demo migrate check screenshot

# A virtualenv with Python 3.11, made once.
$(PY):
	$(PYTHON) -m venv $(VENV)

# Requirements are installed again only when a requirements file changes.
$(VENV)/.requirements: requirements.txt | $(PY)
ifneq ($(TORCH_INDEX),)
	$(PY) -m pip install --index-url $(TORCH_INDEX) "$$(grep -E '^torch==' requirements.txt)"
endif
	$(PY) -m pip install -r requirements.txt
	touch $@

$(VENV)/.requirements-dev: requirements-dev.txt $(VENV)/.requirements
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

# mpi4py (requirements-mpi.txt) only where an MPI is installed: it links against the host's MPI.
$(VENV)/.requirements-mpi: requirements-mpi.txt $(VENV)/.requirements
	if command -v mpirun >/dev/null 2>&1; then $(PY) -m pip install -r requirements-mpi.txt && touch $@; \
	else echo "mpirun not found: MPI tests will skip (apt-get install openmpi-bin libopenmpi-dev)"; fi

migrate: $(VENV)/.requirements
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) manage.py loupe_demo

## run: venv + requirements, migrate, demo project, admin user, serve http://127.0.0.1:8000
## (the first lines it prints: the URL and how to log in)
run: $(VENV)/.requirements
	@$(PY) manage.py migrate --noinput -v 0
	@$(PY) manage.py loupe_demo -v 0
	@$(PY) manage.py loupe_serve --host $(HOST) --port $(PORT) --admin admin

## serve: only serve (after `make run` once); migrations first, so a checkout with new ones does not answer 500
serve: migrate
	$(PY) manage.py loupe_serve --host $(HOST) --port $(PORT)

## test: the whole suite (tests needing PostgreSQL/Redis/Chromium skip with a reason when those are absent)
test: $(VENV)/.requirements-dev $(VENV)/.requirements-mpi
	$(PY) -m pytest $(PYTEST_ARGS)

## lint: ruff over the tree and mypy over selection/ (rules in pyproject.toml); CI runs it before the tests
lint: $(VENV)/.requirements-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

check: $(VENV)/.requirements
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

## screenshot: refresh the screenshots in docs/img/ from the browser tests
screenshot: $(VENV)/.requirements-dev
	LOUPE_UPDATE_SCREENSHOT=1 $(PY) -m pytest tests/browser/test_label_browser.py tests/browser/test_labeling_keys.py tests/browser/test_setup_pages.py -q
