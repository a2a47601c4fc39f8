# ecr-remediator — developer entry points. `make help` lists them.
#
# `make test` is exactly what CI runs (via .ci/run) on a clean clone.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Everything local points the AWS SDK at loopback only, never at AWS or the
# instance-metadata service.
export AWS_REGION ?= us-east-1
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing
export AWS_DEFAULT_REGION ?= $(AWS_REGION)
export AWS_EC2_METADATA_DISABLED := true

# The Python side (ECR emulator, pusher, contract suite) lives in its own venv,
# built from pinned requirements; nothing is installed globally.
PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
EMULATOR_DIR := tests/emulator
PORT ?= 5000

.PHONY: help
USER_TARGETS := demo install deploy deploy-members validate emulator test
help: ## List the targets: what users run first, then the rest
	@echo "Using it:"
	@for t in $(USER_TARGETS); do grep -E "^$$t:.*## " $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'; done
	@echo "Developing it:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | grep -vE "^($(shell echo $(USER_TARGETS) | tr ' ' '|')):" \
	  | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: test
test: fmt-check lint validate unit contract ## What CI runs: format, clippy -D warnings, template checks, every test

.PHONY: check
check: test doc ## test, plus docs built with warnings denied

.PHONY: fmt-check
fmt-check: ## Fail if code is not rustfmt-formatted
	$(CARGO) fmt --all -- --check

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: lint
lint: venv ## clippy on every target (warnings are errors); ruff on the Python emulator
	$(CARGO) clippy --all-targets --all-features --locked -- -D warnings
	$(VENV)/bin/ruff check --config $(EMULATOR_DIR)/ruff.toml $(EMULATOR_DIR) tests/perf infra/deploy_members.py
	$(VENV)/bin/ruff format --check --config $(EMULATOR_DIR)/ruff.toml $(EMULATOR_DIR) tests/perf infra/deploy_members.py

.PHONY: unit
unit: venv ## Run every Rust test (unit, corpus, CLI, planner properties; the emulator tier: live path, sweeps, hub)
	$(CARGO) test --all-targets --features emulator --locked
	$(CARGO) test --doc --locked

$(VENV)/.installed: $(EMULATOR_DIR)/requirements.txt $(EMULATOR_DIR)/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check \
	  -r $(EMULATOR_DIR)/requirements.txt -c $(EMULATOR_DIR)/constraints.txt
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the Python venv (emulator, pusher, test tools) with pinned packages

.PHONY: emulator
emulator: venv ## Run the local ECR emulator in the foreground on 127.0.0.1:PORT (default 5000)
	PYTHONPATH=$(EMULATOR_DIR) $(VENV_PY) -m ecr_emulator --port $(PORT) \
	  --pull-time-exclusion arn:aws:iam::123456789012:user/moto

# Infrastructure tools live in their own venvs: aws-sam-cli and checkov pin
# conflicting dependencies.
SAM_VENV := .venv-sam
CHECKOV_VENV := .venv-checkov
STACK ?= ecr-remediator

$(SAM_VENV)/.installed: infra/requirements-sam.txt infra/constraints-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	  -r infra/requirements-sam.txt -c infra/constraints-sam.txt
	touch $@

$(CHECKOV_VENV)/.installed: infra/requirements-checkov.txt infra/constraints-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	  -r infra/requirements-checkov.txt -c infra/constraints-checkov.txt
	touch $@

.PHONY: validate
validate: $(SAM_VENV)/.installed $(CHECKOV_VENV)/.installed ## cfn-lint, sam validate --lint and checkov on infra/ (no AWS account needed)
	$(SAM_VENV)/bin/cfn-lint infra/template.yaml infra/member.yaml
	SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam validate --lint --template infra/template.yaml --region $(AWS_REGION)
	$(CHECKOV_VENV)/bin/checkov --directory infra --framework cloudformation --quiet --compact --skip-download

# `make deploy` talks to your AWS account with your own configuration: the
# local test settings this Makefile exports are removed for it.
REAL_AWS := env $(foreach v,AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_DEFAULT_REGION AWS_EC2_METADATA_DISABLED,$(if $(filter file,$(origin $(v))),-u $(v)))

PREFIX ?= $(HOME)/.cargo
.PHONY: install
install: ## Install the ecr-remediator CLI into ~/.cargo/bin (PREFIX=… elsewhere; several minutes the first time)
	$(CARGO) install --locked --path . --bin ecr-remediator --root $(PREFIX)

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# ARCH=arm64 needs the aarch64-unknown-linux-gnu standard library
# (`rustup target add aarch64-unknown-linux-gnu`, which needs the network).
ARCH ?= x86_64
PKG_TRIPLE := $(if $(filter arm64,$(ARCH)),aarch64-unknown-linux-gnu,x86_64-unknown-linux-gnu)
PKG_FLAG := $(if $(filter arm64,$(ARCH)),--arm64,--x86-64)
.PHONY: package
package: $(SAM_VENV)/.installed ## dist/: the function as a zip (ARCH=x86_64 default, or arm64; cargo-lambda + zig) and a template deploying it: sam deploy with no Rust toolchain
	@case "$(ARCH)" in x86_64|arm64) ;; *) echo "make package: ARCH must be x86_64 or arm64, not '$(ARCH)'" >&2; exit 2;; esac
	@rustc --print sysroot | xargs -I{} test -d {}/lib/rustlib/$(PKG_TRIPLE) || { \
	  echo "make package ARCH=$(ARCH): the $(PKG_TRIPLE) standard library is not installed; run: rustup target add $(PKG_TRIPLE)" >&2; exit 2; }
	PATH="$(abspath $(SAM_VENV))/bin:$$PATH" $(CARGO) lambda build --release $(PKG_FLAG) --bin bootstrap \
	  --output-format zip --lambda-dir target/lambda-pkg/$(ARCH)
	mkdir -p dist
	cp target/lambda-pkg/$(ARCH)/bootstrap/bootstrap.zip dist/ecr-remediator-$(VERSION)-$(ARCH).zip
	sed -e 's|CodeUri: ../|CodeUri: ecr-remediator-$(VERSION)-$(ARCH).zip|' -e '/BuildMethod: rust-cargolambda/d' \
	  -e '/BuildProperties:/d' -e '/^        Binary: bootstrap$$/d' -e 's|^    Default: arm64$$|    Default: $(ARCH)|' \
	  -e 's|AllowedValues: \[arm64, x86_64\]|AllowedValues: [$(ARCH)]|' infra/template.yaml > dist/template.yaml
	@echo "dist/: deploy with: cd dist && sam deploy --template template.yaml --stack-name STACK --capabilities CAPABILITY_IAM --resolve-s3"

.PHONY: sam-build
sam-build: $(SAM_VENV)/.installed ## sam build: the release function (arm64, cross-compiled with zig) from infra/template.yaml
	cd infra && PATH="$(abspath $(SAM_VENV))/bin:$$PATH" SAM_CLI_TELEMETRY=0 sam build --template template.yaml --beta-features

.PHONY: deploy
deploy: sam-build ## sam build + sam deploy to your account (guided the first time, then infra/samconfig.toml)
	cd infra && $(REAL_AWS) PATH="$(abspath $(SAM_VENV))/bin:$$PATH" SAM_CLI_TELEMETRY=0 \
	  sam deploy $(if $(wildcard infra/samconfig.toml),,--guided) --stack-name $(STACK) \
	  --capabilities CAPABILITY_IAM --resolve-s3

.PHONY: deploy-members
deploy-members: $(SAM_VENV)/.installed ## The member template to OUs as a service-managed StackSet (OUS=ou-… REGIONS=… EXTERNAL_ID=…; from the management account)
	@test -n "$(OUS)" -a -n "$(REGIONS)" -a -n "$(EXTERNAL_ID)" || { echo "usage: make deploy-members OUS=ou-xxxx-yyyyyyyy[,...] REGIONS=us-east-1[,...] EXTERNAL_ID=<the hub's> [STACK=$(STACK)] [MEMBER_ARGS='--delete-orphans true --repository-prefixes team-a/']" >&2; exit 2; }
	$(REAL_AWS) $(SAM_VENV)/bin/python infra/deploy_members.py --hub-stack $(STACK) --ous "$(OUS)" --regions "$(REGIONS)" \
	  --external-id "$(EXTERNAL_ID)" $(MEMBER_ARGS)

.PHONY: demo
demo: venv build ## A buildx push into the local ECR, remediated by the worker: before, after, audit record
	PYTHONPATH=$(EMULATOR_DIR) $(VENV_PY) -m ecr_emulator.demo --binary target/debug/ecr-remediator

.PHONY: contract
contract: venv ## ECR contract suite + pusher tests against a private emulator (ECR_CONTRACT_TARGET=aws: real ECR)
	$(VENV_PY) -m pytest -q -c $(EMULATOR_DIR)/pytest.ini $(EMULATOR_DIR)

.PHONY: release
release: ## Release build of both binaries (size-optimised, LTO; several minutes on 2 cores)
	$(CARGO) build --release --locked --bins

.PHONY: bench
bench: venv release ## ECR calls and peak RSS per push at 0/3,000/30,000 images (0/1,000/10,000 pushes); bootstrap cold start, first event, size; the hub at 1/100/1,000 member accounts
	PYTHONPATH=$(EMULATOR_DIR):tests/perf $(VENV_PY) tests/perf/bench.py --target target/release $(if $(BENCH_FLAGS),$(BENCH_FLAGS),--doc docs/performance.md)

SOAK_PUSHES ?= 1000
SOAK_MINUTES ?= 10
SOAK_FLAGS ?=
.PHONY: soak
soak: venv release ## 1,000+ pushes over 10+ min through 2 serve workers under faults, then an independent check (not in make test)
	PYTHONPATH=$(EMULATOR_DIR):tests/perf $(VENV_PY) tests/perf/soak.py --binary target/release/ecr-remediator \
	  --pushes $(SOAK_PUSHES) --minutes $(SOAK_MINUTES) $(SOAK_FLAGS)

.PHONY: doc
doc: ## Build the docs, warnings are errors
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --locked

.PHONY: build
build: ## Debug build of every binary
	$(CARGO) build --locked

.PHONY: inspect-fixtures
inspect-fixtures: build ## Classify every fixture manifest with `ecr-remediator inspect`
	@for f in tests/fixtures/manifests/*.json; do \
	  printf '%s\n  ' "$$f"; ./target/debug/ecr-remediator inspect "$$f"; \
	done
