# Quick start: `make run` (set up, then run config/default.json) and `make test` (set up, then test).
# On a Jetson, `make jetson` then builds the native library with JetPack's CUDA and TensorRT and runs
# the TensorRT self-test.
# The Python the venv is made with: empty picks one (utility/find_python.sh: python3 if 3.8 or newer,
# else python3.8 ... python3.13); with none it prints the command that installs one and stops.
PYTHON ?=
VENV ?= .venv
# The oldest Python the project supports (JetPack 5); tests run under it too where it is installed.
# A pyenv shim answers `command -v` even when 3.8 is not selected, so test that it runs; pyenv's own
# 3.8 installs are tried too.
PYTHON38 ?= $(shell for p in python3.8 $$HOME/.pyenv/versions/3.8*/bin/python3.8; do \
	if "$$p" -c pass >/dev/null 2>&1; then echo "$$p"; break; fi; done)
VENV38 ?= .venv38
PYTEST_ARGS ?= -q

# What `make test` adds to the venv for the tests of the PyTorch target, the compare chart and mlmark serve (not
# `make run`: torch from the package index is a large download). The Python 3.8 run and a Jetson take the chart's
# and the server's only:
# PyPI's torch for 3.8 is another multi-gigabyte CUDA build, and a Jetson's torch is NVIDIA's wheel, which a
# torchvision from PyPI would replace with PyPI's; the PyTorch tests there skip, saying torch is missing.
TEST_EXTRAS ?= $(if $(wildcard /etc/nv_tegra_release),report,torch,report),serve
TEST_EXTRAS38 ?= report,serve

# Parallel jobs for the native build (CMake 3.10 has no --parallel: the flag goes to make).
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: run test test-default test-py38 setup jetson clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml utility/setup_venv.sh utility/find_python.sh
	sh utility/setup_venv.sh $(if $(PYTHON),--python '$(PYTHON)') $(VENV)
	touch $@

$(VENV38)/.installed: pyproject.toml utility/setup_venv.sh utility/find_python.sh
	sh utility/setup_venv.sh --python '$(PYTHON38)' $(VENV38)
	touch $@

$(VENV)/.test-extras: $(VENV)/.installed
	$(VENV)/bin/python -m pip install -q -e '.[$(TEST_EXTRAS)]'
	touch $@

$(VENV38)/.test-extras: $(VENV38)/.installed
	$(VENV38)/bin/python -m pip install -q -e '.[$(TEST_EXTRAS38)]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/python harness/mlmark.py -c config/default.json

test: test-default test-py38

test-default: $(VENV)/.test-extras
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Skipped where $(VENV) runs 3.8 itself (JetPack 4.6 and 5): the second run would repeat the first.
test-py38:
ifeq ($(PYTHON38),)
	@echo "python3.8 not found: the Python 3.8 test run is skipped (set PYTHON38=/path/to/python3.8)"
else
	@if [ "$$($(VENV)/bin/python -c 'import sys; print(sys.version_info[:2] == (3, 8))' 2>/dev/null)" = True ]; then \
		echo "$(VENV) runs Python 3.8: no second test run"; \
	else \
		$(MAKE) $(VENV38)/.test-extras && $(VENV38)/bin/python -m pytest $(PYTEST_ARGS) -p no:cacheprovider; \
	fi
endif

# CMake 3.10's form (JetPack 4.6's CMake has no -S/-B), into the folder the Python side loads the library
# from. CMake finds nvcc in /usr/local/cuda/bin and JetPack's TensorRT itself; MLMARK_WITH_TENSORRT=ON makes
# a missing TensorRT an error rather than a library without it.
jetson: $(VENV)/.installed
	mkdir -p build/cpp_environment && cd build/cpp_environment && cmake ../../cpp_environment -DMLMARK_WITH_TENSORRT=ON \
		$(if $(MLMARK_CUDA_ARCHS),-DMLMARK_CUDA_ARCHS='$(MLMARK_CUDA_ARCHS)') && cmake --build . -- -j$(JOBS)
	$(VENV)/bin/mlmark selftest --tensorrt

clean:
	rm -rf $(VENV) $(VENV38) build *.egg-info
