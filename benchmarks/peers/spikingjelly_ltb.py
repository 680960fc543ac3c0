"""SpikingJelly's LocalThresholdBalancingRecipe on the benchmark ANNs: a second peer.

Runs in the torch venv (``.venv-torch``, see the Makefile), like
``spikingjelly_ann2snn.py``, whose torch rebuild of the ONNX ANNs it reuses::

    .venv-torch/bin/python benchmarks/peers/spikingjelly_ltb.py --batches 128,1 \\
        --timesteps 1,2,4,8,16,32,64          # docs/results/spikingjelly_ltb.json
    .venv-torch/bin/python benchmarks/peers/spikingjelly_ltb.py --batches 512,32,8 \\
        --limit 2000 --timesteps 1,2,4,8,16,32,64   # adds to the same file

Same ANNs, same calibration images (``--calib`` TRAIN images, same seed as
``benchmarks/fidelity.py``), the first ``--limit`` test images (all by default), the
recipe's defaults (``channel_dim=1, fuse_flag=True, eps=1e-6``). The recipe takes the
calibration images as a data loader; each of ``--batches`` is one run, with the images in
batches of that size, and the batching matters: each batch is one update of the thresholds
(below). 128 is the batch size of SpikingJelly's own ImageNet example (4 updates from 512
images); 1 gives 512 updates, about as many as that example makes (50,000 images / 128).

What ``LocalThresholdBalancingRecipe`` (``activation_based/ann2snn/recipes/
local_threshold_balancing.py``, SpikingJelly 2.0.0) does: Conv-BN fusion; then after every
``nn.ReLU`` (after the MaxPool2d when a ReLU's only user is one) a hook with one threshold
per channel, starting at 0. For each calibration batch, the hook raises every threshold by
twice the mean (over the batch and the positions) of how far the activations exceed it, and
passes ``min(activation, threshold)`` on, so later layers calibrate on clipped inputs. That
is one step of gradient descent, learning rate 1, on the mean squared error between the
activation and its clipped value; the error only ever pulls a threshold up, so thresholds
grow with every batch towards the channel's maximum. Each ReLU then becomes
``x / threshold -> HalfThresholdIFNode -> spikes * threshold`` per channel: an IF neuron
with threshold 1, reset by subtraction, membrane starting at 1/2 (no negative spikes). A
MaxPool2d right after a ReLU moves in front of the neuron (it pools the input currents).
Nothing depends on T, so one run of ``max(T)`` steps gives every T; the readout is the sum
of the output layer's (analog) outputs, as for ``spikingjelly_ann2snn.py``. A second readout
starts the sum at the step that ``ann2snn.estimate_delay_start`` picks for each T, as
SpikingJelly's ImageNet example does (``--delay-start auto``); that one is per T. Each run
also records, to explain its numbers, the ANN clipped at the recipe's thresholds
(:func:`clipped_ann`), the thresholds against the calibration maxima and how far each moved
MaxPool overshoots (:func:`maxpool_overshoot`).

The recipe hooks ``nn.ReLU`` modules only; :func:`relu6_check` records what it does with
``nn.ReLU6`` (and ``F.relu6``, ``F.relu``) on tiny models, in the JSON under ``relu6``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity import RESULTS, load_data, machine, model_entries, preprocess  # noqa: E402
from spikingjelly_ann2snn import OnnxModule, check_ann  # noqa: E402

TIMESTEPS = (1, 2, 4, 8, 16, 32, 64)


def convert(ann: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """The recipe with its defaults; ``batches`` is its calibration data loader."""
    from spikingjelly.activation_based import ann2snn

    recipe = ann2snn.LocalThresholdBalancingRecipe(dataloader=batches)
    return ann2snn.Converter(recipe=recipe, device="cpu").convert(copy.deepcopy(ann)).eval()


@torch.no_grad()
def step_outputs(snn: nn.Module, x: np.ndarray, steps: int, batch: int = 500) -> np.ndarray:
    """The output layer's output at every step, ``(steps, len(x), classes)``."""
    from spikingjelly.activation_based import functional

    chunks = []
    for first in range(0, len(x), batch):
        images = torch.from_numpy(x[first:first + batch])
        functional.reset_net(snn)
        chunks.append(np.stack([snn(images).numpy() for _ in range(steps)]))
        functional.reset_net(snn)
    return np.concatenate(chunks, axis=1)


def delay_starts(snn: nn.Module, batches: list[torch.Tensor], grid: list[int]) -> dict:
    """``estimate_delay_start`` (its default: the first calibration batch) for each T."""
    from spikingjelly.activation_based import ann2snn

    with warnings.catch_warnings():  # it warns when T is too short to delay the readout
        warnings.simplefilter("ignore", RuntimeWarning)
        return {t: ann2snn.estimate_delay_start(snn, batches, "cpu", t) for t in grid}


def thresholds(snn: nn.Module) -> list[torch.Tensor]:
    """The recipe's per-channel thresholds, one tensor per neuron layer, in graph order."""
    scalers = {name: m for name, m in snn.named_modules() if name.endswith("scaler1")}
    return [scalers[k].scale.flatten() for k in sorted(
        scalers, key=lambda name: int(name.rpartition("ltb_spiking_")[2].split(".")[0]))]


@torch.no_grad()
def clipped_ann(ann: nn.Module, limits: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The ANN's output with every ReLU clipped at the recipe's thresholds: what the SNN's
    rates approach as T grows if every layer converts exactly (here the min can go before
    a MaxPool, since clipping commutes with it)."""
    relus = [m for m in ann.modules() if type(m) is nn.ReLU]
    if len(relus) != len(limits):
        raise ValueError(f"{len(relus)} ReLUs but {len(limits)} neuron layers")
    hooks = [relu.register_forward_hook(
                 lambda _m, _i, out, t=t: torch.minimum(out, t.view(-1, *[1] * (out.dim() - 2))))
             for relu, t in zip(relus, limits)]
    try:
        return ann(x)
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def channel_peaks(ann: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each ReLU's largest output per channel on ``x`` (the max norm's thresholds)."""
    peaks = []
    hooks = [m.register_forward_hook(
                 lambda _m, _i, out: peaks.append(out.transpose(0, 1).flatten(1).amax(1)))
             for m in ann.modules() if type(m) is nn.ReLU]
    ann(x)
    for hook in hooks:
        hook.remove()
    return peaks


@torch.no_grad()
def maxpool_overshoot(snn: nn.Module, x: np.ndarray, steps: int) -> dict[str, float]:
    """Per MaxPool2d of the SNN (pooling input currents, in front of a neuron): the mean of
    relu(time average of its output) over relu(max pool of the time-averaged input). 1 when
    pooling commutes with averaging over time (constant currents); above 1 when the max of
    fluctuating currents overshoots the max of their means."""
    from spikingjelly.activation_based import functional

    pools = {name: m for name, m in snn.named_modules() if isinstance(m, nn.MaxPool2d)}
    sums = {name: [0, 0] for name in pools}

    def record(name):
        def hook(_m, inputs, out):
            sums[name][0] = sums[name][0] + inputs[0]
            sums[name][1] = sums[name][1] + out
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in pools.items()]
    functional.reset_net(snn)
    try:
        for _ in range(steps):
            snn(torch.from_numpy(x))
    finally:
        for hook in hooks:
            hook.remove()
        functional.reset_net(snn)
    return {name: float(torch.relu(sums[name][1] / steps).mean()
                        / torch.relu(m(sums[name][0] / steps)).mean())
            for name, m in pools.items()}


def relu6_check() -> dict[str, str]:
    """What the recipe does with a ReLU6 (module or function) and a functional ReLU: one tiny
    Conv -> activation -> Linear model per case, converted on random calibration data."""
    import torch.nn.functional as F

    class Tiny(nn.Module):
        def __init__(self, act):
            super().__init__()
            self.conv, self.act, self.fc = nn.Conv2d(1, 4, 3), act, nn.Linear(4 * 6 * 6, 3)

        def forward(self, x):
            return self.fc(torch.flatten(self.act(self.conv(x)), 1))

    class Lambda(nn.Module):  # F.* calls trace as call_function nodes, not modules
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)

    torch.manual_seed(0)
    x = 3 * torch.randn(64, 1, 8, 8)
    cases = {"nn.ReLU": Tiny(nn.ReLU()), "nn.ReLU6": Tiny(nn.ReLU6()),
             "F.relu6": Tiny(Lambda(F.relu6)), "F.relu": Tiny(Lambda(F.relu))}
    out = {}
    for name, model in cases.items():
        try:
            snn = convert(model.eval(), [x])
            kinds = sorted({type(m).__name__ for m in snn.modules()} & {
                "HalfThresholdIFNode", "ReLU", "ReLU6"})
            out[name] = f"converted; neuron/activation modules: {', '.join(kinds)}"
        except Exception as error:  # the outcome is the result
            out[name] = re.sub(r" at 0x[0-9a-f]+", "", f"{type(error).__name__}: {error}")
    return out


def run(ann: nn.Module, calibration: torch.Tensor, batch: int, x_test: np.ndarray,
        labels: np.ndarray, grid: list[int]) -> dict:
    """One conversion (calibration batches of ``batch`` images) and one run of max(grid) steps."""
    batches = list(torch.split(calibration, batch))
    start = time.perf_counter()
    snn = convert(ann, batches)
    converted = time.perf_counter() - start
    outputs = step_outputs(snn, x_test, max(grid))
    simulated = time.perf_counter() - start - converted
    running = np.cumsum(outputs, axis=0)
    delays = delay_starts(snn, batches, grid)
    limits = thresholds(snn)
    clipped = torch.cat([clipped_ann(ann, limits, torch.from_numpy(x_test[i:i + 1000]))
                         for i in range(0, len(x_test), 1000)]).argmax(1).numpy()

    def top1(t, start=0, n=None):
        total = running[t - 1, :n] - (running[start - 1, :n] if start else 0)
        return float(np.mean(total.argmax(1) == labels[:n]))

    entry = {"calibration_batch": batch, "threshold_updates": len(batches),
             "test_images": len(labels),
             "accuracy": {str(t): top1(t) for t in grid},
             "accuracy_delayed": {str(t): top1(t, d) for t, d in delays.items()},
             "delay_start": {str(t): d for t, d in delays.items()},
             "clipped_ann_accuracy": float(np.mean(clipped == labels))}
    if len(labels) > 2000:
        entry["accuracy_first_2000"] = {str(t): top1(t, 0, 2000) for t in grid}
    entry["threshold_over_calibration_max"] = [  # median over channels, per neuron layer
        float(torch.median(t / p.clamp(min=1e-12)))
        for t, p in zip(limits, channel_peaks(ann, calibration))]
    entry["maxpool_overshoot_100_images"] = maxpool_overshoot(snn, x_test[:100], max(grid))
    entry["seconds"] = {"convert": converted, "simulate": simulated}
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg,resnet")
    parser.add_argument("--calib", type=int, default=512)
    parser.add_argument("--batches", default="128",
                        help="calibration batch sizes to run (one threshold update per batch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timesteps", default=",".join(map(str, TIMESTEPS)))
    parser.add_argument("--out", type=Path, default=RESULTS / "spikingjelly_ltb.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import spikingjelly

    grid = [int(t) for t in args.timesteps.split(",")]
    names = args.models.split(",")
    specs = model_entries(names)
    calib_u8, test_u8, labels = load_data(args.calib, args.seed, args.limit)
    results = {"tool": f"spikingjelly {getattr(spikingjelly, '__version__', '2.0.0')}",
               "recipe": "LocalThresholdBalancingRecipe(dataloader) with its defaults: "
                         "channel_dim=1, fuse_flag=True, eps=1e-6",
               "torch": torch.__version__, "timesteps": grid,
               "calibration": {"images": args.calib, "seed": args.seed, "split": "train"},
               "test": "the first test_images images of the TEST split",
               "readouts": {"accuracy": "sum of the outputs of steps 1 ... T",
                            "accuracy_delayed": "sum from step delay_start + 1 to T, "
                                                "delay_start from estimate_delay_start on "
                                                "the first calibration batch"},
               "machine": {**machine(), "torch_threads": args.threads},
               "relu6": relu6_check(), "models": {}}
    if args.out.exists():  # runs of other models and batch sizes stay
        results["models"] = json.loads(args.out.read_text()).get("models", {})
    print("relu6:", json.dumps(results["relu6"], indent=1), flush=True)
    for name in names:
        spec = specs[name]
        ann = OnnxModule(onnx.load(spec["path"])).eval()
        x_test = preprocess(test_u8, spec)
        calibration = torch.from_numpy(preprocess(calib_u8, spec))
        ann_acc, diff = check_ann(ann, spec["path"], x_test, labels)
        print(f"{name}: torch rebuild |diff| {diff:.2e}, ANN {100 * ann_acc:.2f}% on "
              f"{len(labels)} images", flush=True)
        entry = results["models"].setdefault(name, {})
        entry["max_abs_diff_vs_onnxruntime"] = diff
        entry.setdefault("ann_accuracy_torch", {})[str(len(labels))] = ann_acc  # by images
        for batch in map(int, args.batches.split(",")):
            load = list(os.getloadavg())
            result = run(ann, calibration, batch, x_test, labels, grid)
            result["load_average"] = {"start": load, "end": list(os.getloadavg())}
            entry.setdefault("runs", {})[f"batch_{batch}"] = result
            print(f"  batch {batch} ({result['threshold_updates']} updates), clipped ANN "
                  f"{100 * result['clipped_ann_accuracy']:.2f}%", flush=True)
            for key in ("accuracy", "accuracy_delayed"):
                print(f"    {key:16s} " + " ".join(f"{100 * result[key][str(t)]:6.2f}"
                                                  for t in grid), flush=True)
            print(f"    delay {result['delay_start']}, {result['seconds']}", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
