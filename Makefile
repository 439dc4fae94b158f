# egress-natd. `sudo make demo` runs the lab demo; `sudo make test` runs every test.
SHELL := /bin/bash
NODE_MODULES := node_modules/.package-lock.json
TESTS ?= dist/test/unit dist/test/lab

.PHONY: all build deps test-deps test unit lab machines lint format demo bench chaos clean install uninstall deb

# make install: DESTDIR and PREFIX (default /usr/local) are honoured; config and key go to /etc/egress-natd.
PREFIX ?= /usr/local
export PREFIX DESTDIR

all: build

$(NODE_MODULES): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund

build: $(NODE_MODULES)
	npx tsc -p tsconfig.json
	chmod +x bin/egress-natd

deps:
	scripts/install-deps.sh

test-deps:
	scripts/install-deps.sh --test

test: deps test-deps build lint
	@set -o pipefail; npx tap --reporter=tap $(TESTS) | node scripts/tap-summary.mjs

# The formatter and the linter: `make lint` checks (and runs in `make test`); `make format` fixes what they can.
lint: $(NODE_MODULES)
	npx prettier --check --log-level=warn '**/*.{ts,mjs,js}'
	npx eslint .

format: $(NODE_MODULES)
	npx prettier --write --log-level=warn '**/*.{ts,mjs,js}'
	npx eslint --fix .

unit: build
	@set -o pipefail; npx tap --reporter=tap dist/test/unit | node scripts/tap-summary.mjs

lab: deps test-deps build
	@set -o pipefail; npx tap --reporter=tap dist/test/lab | node scripts/tap-summary.mjs

# The machines lab alone (also part of `make lab` and `make test`): Debian 13 machines booted
# with systemd-nspawn, the .deb installed with apt and run by systemd. The first run builds their
# root filesystem with mmdebstrap into build/machines (about 30 s).
machines: deps test-deps build
	@set -o pipefail; npx tap --reporter=tap dist/test/lab/machines.test.js | node scripts/tap-summary.mjs

demo: deps build
	node dist/lab/demo.js

bench: deps build
	node dist/bench/main.js

# The chaos soak: the cluster lab under random faults for MINUTES, invariants checked all the
# time; SEED= repeats a run's choices. Exits non-zero on any violation.
MINUTES ?= 10
chaos: deps test-deps build
	MINUTES=$(MINUTES) SEED=$(SEED) node dist/lab/chaos-main.js

install: build
	scripts/install.sh install

uninstall:
	scripts/install.sh uninstall

deb: build
	scripts/deb.sh

clean:
	rm -rf dist build
