# gpu-stack: `make test` and `make plan STACK=dev` are the two commands.
PY      := .venv/bin/python
STAMP   := .venv/.installed
STACK   ?= dev

.PHONY: test plan schema venv clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

plan: $(STAMP)
	$(PY) -m tools.plan $(STACK)

schema: $(STAMP)
	$(PY) -m tools.schema

clean:
	rm -rf build .pytest_cache
