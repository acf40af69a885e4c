# Two commands do all set-up on a fresh machine:
#   make demo   installs grader into .venv and grades the sample class offline (local model)
#   make test   runs the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CLASS  ?= samples/intro-python
# llama.cpp's native CPU build compiles but crashes on decode on some CPUs; a portable build
# avoids that. Set here so nobody has to know.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: demo test test-ahead lint install clean docs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# pip's wheel cache ignores CMAKE_ARGS: build llama.cpp afresh so a natively built wheel
	# cached earlier on this machine is never reused (same range as the `local` extra).
	$(BIN)/python -m pip install --quiet --no-cache-dir 'llama-cpp-python[server]>=0.3.36,<0.4'
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
	touch $@

demo: install
	env -u GEMINI_API_KEY -u GOOGLE_API_KEY -u GOOGLE_GENAI_USE_VERTEXAI \
		-u GOOGLE_GENAI_USE_ENTERPRISE -u GOOGLE_CLOUD_PROJECT \
		$(BIN)/grade run $(CLASS) --out reports/$(notdir $(CLASS))

test: install
	$(BIN)/python -m pytest

# The suite with the model table read AHEAD_DAYS from today (UTC): a test that depends on
# today's date fails here long before that date comes.
AHEAD_DAYS ?= 400
test-ahead: install
	GRADER_TODAY=$$($(BIN)/python -c 'import datetime as d; print((d.datetime.now(d.UTC) + d.timedelta(days=$(AHEAD_DAYS))).date())') \
		$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check grader tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) reports/*/ $(CLASS)/.grader

# The reference pages generated from the code (tests/test_docs.py checks they are up to date).
docs: install
	$(BIN)/python -m grader.cli.reference
