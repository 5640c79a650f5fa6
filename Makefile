# d2ext: `make demo` and `make test` do all the set-up (idempotent: stamps under .venv/).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
D2_VERSION ?= 0.7.2
CUDA_HOME_CHECK ?= /usr/local/cuda-13.0
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets
# the compile check of .cu files only needs one architecture
CUDA_CHECK_ARCH ?= 9.0
PYTEST_ARGS ?=

.PHONY: all venv deps d2 build data demo test lint format cuda-check device-check device-check-cpu device-wheels clean

all: build

$(VENV)/.venv-created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip<25"
	touch $@

$(VENV)/.deps-installed: $(VENV)/.venv-created requirements.txt
	$(PIP) install -q -r requirements.txt
	touch $@

# Detectron2 has no PyPI release: upstream D2 is packaged as sal-detectron2 (cp310 wheel, pure
# Python part only; its _C is skipped on other Pythons). Its bundled `tools` package moves aside
# so it never shadows ours; D2's unmodified scripts stay runnable from $(VENV)/d2-tools.
$(VENV)/.d2-installed: $(VENV)/.deps-installed
	@if $(PY) -c "import detectron2" 2>/dev/null; then \
	  echo "detectron2 already importable: $$($(PY) -c 'import detectron2;print(detectron2.__file__)')"; \
	else \
	  rm -rf $(VENV)/d2 $(VENV)/d2-tools && \
	  $(PIP) install -q --no-deps --only-binary=:all: --python-version 3.10 --target $(VENV)/d2 \
	    sal-detectron2==$(D2_VERSION) && \
	  mv $(VENV)/d2/tools $(VENV)/d2-tools && \
	  echo "$(abspath $(VENV))/d2" > "$$($(PY) -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')/detectron2_pure.pth" && \
	  $(PY) -c "import detectron2; print('detectron2', detectron2.__version__)"; \
	fi
	touch $@

venv deps d2: $(VENV)/.d2-installed

CSRC := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' 2>/dev/null)
$(VENV)/.d2ext-built: $(VENV)/.d2-installed setup.py $(CSRC)
	$(PIP) install -q --no-deps --no-build-isolation --use-pep517 -e .
	$(PY) -m d2ext.utils.collect_env
	touch $@

build: $(VENV)/.d2ext-built

# Compile and link every .cu file (the CPU machines cannot run them): CUDA code never rots.
cuda-check: $(VENV)/.d2-installed
	@if [ -x "$(CUDA_HOME_CHECK)/bin/nvcc" ] || [ -n "$$CUDA_HOME" ]; then \
	  cuda_home=$${CUDA_HOME:-$(CUDA_HOME_CHECK)}; \
	  echo "compile-checking CUDA sources with $$cuda_home/bin/nvcc"; \
	  FORCE_CUDA=1 CUDA_HOME=$$cuda_home TORCH_CUDA_ARCH_LIST="$(CUDA_CHECK_ARCH)" MAX_JOBS=2 \
	    $(PY) setup.py -q build_ext --build-temp build/cuda-check/tmp --build-lib build/cuda-check/lib \
	    && echo "CUDA build OK: $$(ls build/cuda-check/lib/d2ext/_C*.so)"; \
	else echo "nvcc not found: skipping the CUDA compile check"; fi

data: build
	$(PY) tools/make_synthetic.py

# The demo model: trained from scratch on synth_shapes, evaluated with COCOEvaluator, drawn with
# D2's Visualizer. Override e.g. `make demo DEMO_CONFIG=configs/Base/mask_rcnn_R_18_FPN_synth.yaml`.
DEMO_CONFIG ?= configs/YOLACT/yolact_R_18_synth.yaml
DEMO_ITERS ?= 500
DEMO_OUT ?= output/demo
# a 500-iteration model from scratch scores low (softmax over 7 classes): draw from 0.2
DEMO_VIS_THRESHOLD ?= 0.2
demo: build
	$(PY) tools/make_synthetic.py
	$(PY) tools/train_net.py --config-file $(DEMO_CONFIG) OUTPUT_DIR $(DEMO_OUT) \
	  SOLVER.MAX_ITER $(DEMO_ITERS) SOLVER.STEPS "($$(( $(DEMO_ITERS) * 3 / 4 )),)" SOLVER.WARMUP_ITERS 50
	$(PY) tools/demo.py --config-file $(DEMO_CONFIG) --dataset synth_shapes_val --max-images 8 \
	  --confidence-threshold $(DEMO_VIS_THRESHOLD) \
	  --output $(DEMO_OUT)/vis MODEL.WEIGHTS $(DEMO_OUT)/model_final.pth OUTPUT_DIR $(DEMO_OUT)
	@echo "demo done: evaluation tables above (also in $(DEMO_OUT)/log.txt); pictures in $(DEMO_OUT)/vis/"

# The prepared GPU check (tools/device_check.py): on the GPU machine, with its own python3 and
# the wheels carried in .whl/, one command (< 8 min) writes logs, tests and benchmarks to $OUT.
device-check:
	$(PYTHON) tools/device_check.py

# the same steps as a dry run on CPU (no install, no CUDA build, the CUDA tests skip), so the
# script never rots; its files go to build/device-check/dry-run-out (replaced by each run)
device-check-cpu: build
	$(PY) tools/device_check.py --cpu

# here, with a registry: the wheels the GPU machine lacks, at the versions of $(VENV)
device-wheels: $(VENV)/.d2-installed
	$(PY) tools/device_wheels.py .whl

# ruff lint + format check (settings in pyproject.toml); `make format` rewrites the tree
lint: $(VENV)/.deps-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.deps-installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint build cuda-check device-check-cpu
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

clean:
	rm -rf build output *.egg-info d2ext/_C*.so
