# `make run` runs the whole pipeline; `make test` runs the tests. Each sets itself up
# first: a project-local .venv with the exact versions in requirements.lock.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-$(shell md5sum requirements.lock | cut -c1-12)
# The optional Ray launcher lives in an environment of its own (it needs cloudpickle<3).
CLUSTER_VENV := .venv-cluster
CLUSTER_STAMP := $(CLUSTER_VENV)/.installed-$(shell md5sum requirements-cluster.lock | cut -c1-12)

# No usage reports and no update checks: nothing may wait on the network (offline.env).
include offline.env
export $(shell sed -n 's/^\([A-Z_]*\)=.*/\1/p' offline.env)
export PATH := $(BIN):$(PATH)

.PHONY: run robust classroom race serve test test-fast test-slow cluster browser postgres server server-stop server-status lint bench ui lock

$(STAMP): requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed, found " + sys.version.split()[0] if sys.version_info < (3, 11) else 0)'
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	touch $@

$(CLUSTER_STAMP): requirements-cluster.lock
	rm -rf $(CLUSTER_VENV)
	$(PYTHON) -m venv $(CLUSTER_VENV)
	$(CLUSTER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-cluster.lock
	touch $@

cluster: $(CLUSTER_STAMP)  ## .venv-cluster: the pipeline with Ray 2.x and hydra-ray-launcher 1.2.2 (hydra/launcher=ray)

run: $(STAMP)  ## the whole DVC pipeline with the default sweep
	dvc repro

robust: $(STAMP)  ## the Welsch-cost sweep of conf/experiment/robust.yaml: two minima and a plateau
	@start=$$(date +%s); dvc repro split && python -m pipeline.train --multirun +experiment=robust \
		&& echo "make robust took $$(( $$(date +%s) - start )) s; open reports/landscape.html (reports/descent.gif for slides)"

classroom: $(STAMP)  ## gradient descent in dollars, conf/experiment/classroom.yaml: zig-zags, a crawl, a divergence
	@start=$$(date +%s); dvc repro split && python -m pipeline.train --multirun +experiment=classroom \
		&& echo "make classroom took $$(( $$(date +%s) - start )) s; open reports/descent.gif or reports/landscape.html"

race: $(STAMP)  ## gd, momentum, nesterov and adam from one start on the Welsch landscape, conf/experiment/race.yaml
	@start=$$(date +%s); dvc repro split && python -m pipeline.train --multirun +experiment=race \
		&& echo "make race took $$(( $$(date +%s) - start )) s; open reports/landscape.html and press play"

# Two test processes (pytest-xdist): every test keeps to its own tmp_path, so they may
# run side by side; `python -m pytest tests/test_x.py` runs tests one by one, in-process.
test: $(STAMP) postgres  ## the tests CI runs, end-to-end ones included (about six minutes)
	python -m pytest -n 2

test-fast: $(STAMP)  ## the unit tests alone, for the edit-test loop (no subprocess, no server, no project trained into a store: about a minute)
	python -m pytest -n 2 -m "not slow and not e2e and not integration"

test-slow: $(STAMP) browser postgres cluster  ## the slow-marked tests
	python -m pytest -m slow

browser:  ## Debian's Chromium for the page test, installed with apt-get where missing (needs root)
	@test -x /usr/bin/chromium || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

postgres:  ## Debian's PostgreSQL for the team server, installed with apt-get where missing (needs root)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql)

server: $(STAMP) postgres  ## start the team tracking server (PostgreSQL + MLflow on 127.0.0.1); prints the URI to export
	python -m pipeline.server start

server-stop: $(STAMP)  ## stop the team tracking server
	python -m pipeline.server stop

server-status: $(STAMP)  ## is the team tracking server running?
	python -m pipeline.server status

serve: $(STAMP)  ## serve the champion on http://127.0.0.1:5001 (the store check first: it relocates a moved project)
	python -m pipeline.store
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} mlflow models serve \
		-m models:/house-price@champion --env-manager local --host 127.0.0.1 --port 5001

lint: $(STAMP)
	ruff check .
	mypy

bench: $(STAMP) postgres  ## speed figures, each against a baseline measured in the same run
	python bench/pipeline_speed.py
	python bench/optimizer_speed.py
	python bench/sweep_speed.py
	python bench/server_load.py
	python bench/data_scale.py

ui: $(STAMP)  ## the MLflow UI on http://127.0.0.1:5000, one worker (a small machine)
	@python -c "from pipeline.tracking import ui_links, tracking_uri; print(*ui_links(tracking_uri(None), 'downhill'), sep='\n')"
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000 --workers 1

lock: $(STAMP)  ## rewrite requirements.lock from the current .venv
	(head -2 requirements.lock; python -m pip freeze --exclude-editable) > requirements.lock.new
	mv requirements.lock.new requirements.lock
