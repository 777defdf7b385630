# One command sets up and runs each job; both first install whatever is
# missing or stale into .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mmf_rec-installed

.PHONY: install demo test chromium clean

install: $(STAMP)

# pip<24.1: omegaconf 2.0.x (which MMF 1.0.0rc10 needs) declares metadata
# that newer pips reject. MMF's own pins do not install on Python 3.11, so it
# goes in with --no-deps and requirements.txt provides its real dependencies.
# TorchRec likewise: the CPU build of FBGEMM, never the CUDA one beside it.
$(STAMP): requirements.txt requirements-test.txt setup.py pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "pip==23.2.1" "setuptools==84.2.1"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-test.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps mmf==1.0.0rc10
	-@$(BIN)/python -m pip uninstall --quiet --yes fbgemm-gpu 2>/dev/null
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps torchrec==1.9.2 fbgemm-gpu-cpu==1.9.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m mmf_rec.plugin --install-hook
	$(BIN)/python -c "import mmf_rec.plugin as p; p.apply(); print('mmf imports with mmf_rec')"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mmf_run config=projects/kbrec/dlrm_mm.yaml

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q --durations=10

# Headless Chromium for tests/test_browser.py, from Debian's packages (as root,
# with apt-get). The leading '-': when it cannot install, make test goes on and
# the browser test skips, saying why (test-artifacts/chromium-install.txt).
chromium:
	-@bash .ci/install_chromium

clean:
	rm -rf $(VENV) build *.egg-info test-artifacts
