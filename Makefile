# Two commands from a fresh clone:
#   make demo   sets up .venv and converts + evaluates the shipped Fashion-MNIST CNN
#   make test   sets up .venv (with test tools) and runs the linter and the test suite
# Benchmarks (long; they need Debian's dataset-fashion-mnist and write docs/results/):
#   make fidelity  issue 3: accuracy against T, ablation and SpikingJelly (about 1.5 h)
#   make speed     issue 5: time and memory against onnxruntime and SpikingJelly
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

TORCH_VENV ?= .venv-torch
TORCH_STAMP := $(TORCH_VENV)/.installed
RESULTS := docs/results

.PHONY: demo test lint setup clean fidelity speed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# The peer runs beside a pinned CPU torch (a bare torch requirement pulls a CUDA build);
# SpikingJelly's own requirements would replace it, hence --no-deps and its two imports.
$(TORCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TORCH_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(TORCH_VENV)/bin/python -m pip install --quiet -e .
	$(TORCH_VENV)/bin/python -m pip install --quiet --no-deps spikingjelly==2.0.0
	$(TORCH_VENV)/bin/python -m pip install --quiet loguru==0.7.3 requests==2.34.2
	touch $(TORCH_STAMP)

fidelity: $(STAMP) $(TORCH_STAMP)
	$(BIN)/python -m pip install --quiet matplotlib
	$(BIN)/python benchmarks/fidelity.py --out $(RESULTS)/fidelity_10k.json
	$(TORCH_VENV)/bin/python benchmarks/peers/spikingjelly_ann2snn.py \
		--timesteps 1,2,4,8,16,32,64 --out $(RESULTS)/spikingjelly.json
	$(BIN)/python benchmarks/fidelity.py --models demo --timesteps 4,8,32 --limit 2000 \
		--variants dni_narrow,dni_minus_theta,dni_layer,dni_burst2,dni,dni_ss,dni_ss_spiking_readout \
		--out $(RESULTS)/fidelity_neurons.json
	$(BIN)/python benchmarks/fidelity.py --report

speed: $(STAMP) $(TORCH_STAMP)
	$(BIN)/python benchmarks/speed.py --models vgg,resnet,demo --spikingjelly
	$(BIN)/python benchmarks/dense_or_events.py --out $(RESULTS)/dense_or_events.md

demo: $(STAMP)
	$(BIN)/snnc demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info
