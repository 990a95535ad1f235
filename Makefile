# qsocube: `make product` builds the default release, `make test` runs the tests.
# PROFILE: smoke, default or study (a sample the size of the original study's); see
# qsocube/core/profiles.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch lies on this machine's disk; any other request pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
PROFILE ?= default
RELEASE ?= products/$(PROFILE)
BENCH_SIZE ?= small
STAMP := $(VENV)/.installed

.PHONY: install product test test-tools bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[train,analysis,scale,test]"
	touch $(STAMP)

product: install
	$(BIN)/qsocube release --profile $(PROFILE) --out $(RELEASE)

test: install test-tools
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Headless Chromium renders the report, STILTS reads the catalogue, and ncdump/h5dump read
# the cube in the tests; where they cannot be installed (no root, no Debian) those tests
# skip with a message instead.
TEST_TOOLS := chromium stilts ncdump h5dump
test-tools:
	@missing=0; for tool in $(TEST_TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	if [ $$missing = 1 ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends chromium stilts netcdf-bin hdf5-tools >/dev/null) \
			|| echo "could not install the test tools: their tests will skip"; \
		else echo "test tools missing and not installable here: their tests will skip"; fi; \
	fi

bench: install
	$(BIN)/python -m bench --size $(BENCH_SIZE)

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache bench/results
	find products -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
