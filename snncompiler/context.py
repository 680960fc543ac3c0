"""Compile configuration and the context that passes share."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from snncompiler.runtime.opset import NEGATIVE_THRESHOLDS

if TYPE_CHECKING:
    from snncompiler.distributed import Cluster
    from snncompiler.passes.balance_potentials import SecondStageAnn

INITIAL_POTENTIALS = ("dni", "half", "zero")
GRANULARITIES = ("channel", "layer")
LEVEL_SEARCHES = ("layer", "network")


# A neuron whose thresholds are chosen for bursts of k spikes a step needs a cap of at least
# 4k to make up for uneven input and for inputs past the calibration range (docs/algorithm.md,
# "Room to catch up"). On EfficientNet-Lite0, thresholds for 1024 levels, 160 test views
# (benchmarks/burst_cap.py, docs/results/burst_cap.md): at T=32 (bursts of 32) a cap of 64
# leaves the photos past the calibration range with logit errors up to 32% (90th percentile
# 0.051), a cap of 128 brings them to 18.5% (0.009); at T=4 (bursts of 256) caps of 256, 512
# and 1024 give 97.5%, 100% and 100% agreement, mean logit errors 0.070, 0.026 and 0.0088:
# with 4x room, T=4 is as close to the ANN as T=32.
CATCH_UP_ROOM = 4


@dataclass(frozen=True)
class CompileConfig:
    """Everything a user can choose about a conversion.

    Attributes:
        timesteps: Target T values; DNI picks one (threshold, v0) set per value from a single
            pass of calibration statistics. The first is the default T of the program.
        theta_neg: SNM negative threshold: ``"zero"``, ``"minus_theta"`` (the SNM paper's
            code) or ``"off"`` (plain integrate-and-fire, no negative spikes).
        max_spikes_per_step: The most spikes a neuron may send in one step (1 is the paper's
            neuron): how fast it can catch up when its input arrives in bursts. It does not
            set the thresholds (``resolution`` does), so a large value costs work only where
            a neuron needs it (a burst is one event to the next layer).
        resolution: The number of threshold steps that a neuron's output can take over a
            run of T steps, at least: for a target T the thresholds are chosen for bursts
            of ``ceil(resolution / T)`` spikes (capped by ``max_spikes_per_step``), so a
            small T gets several levels per step and a large T single spikes
            (:meth:`levels_per_step`). 1 turns bursts off. None (the default): the fewest
            of ``resolution_candidates`` whose SNN readout is within ``output_tolerance``
            of the ANN's on held-out calibration images, for each target T
            (``passes/choose_resolution.py``).
        resolution_candidates: What ``resolution=None`` chooses from, fewest first.
        output_tolerance: The readout error ``||SNN - ANN|| / ||ANN||`` (over the held-out
            calibration images) that ``resolution=None`` accepts.
        level_search: For ``resolution=None``: ``"network"`` (the default) gives every layer
            the same count; ``"layer"`` then refines it layer by layer, giving fewer levels
            to the layers where they save the most operations for the least readout error,
            up to ``output_tolerance`` (``passes/choose_resolution.py``). On the
            Fashion-MNIST CNNs it saves up to 20% of the synaptic operations at T = 1-16 for up
            to 0.13 point of accuracy (docs/results/fidelity.md), so it is not the default.
        coarse_levels: Levels below ``resolution_candidates`` that the layer search may give
            a single layer (never the whole network).
        level_search_budget: The most neuron updates (neurons x images x steps) that the
            layer search may simulate per target T; a T whose first round of trials (one
            per layer) would not fit keeps the network's choice, and the report says so.
        granularity: ``"channel"`` or ``"layer"`` thresholds.
        initial_potential: ``"dni"`` (searched), ``"half"`` (theta/2) or ``"zero"``.
        threshold_percentiles: Candidate thresholds, as percentiles of each channel's
            positive activations (100 is the maximum).
        threshold_search: Pick each threshold among ``threshold_percentiles`` by the DNI
            objective; when False the last percentile is used as is (classic baselines).
        histogram_bins: Bins per channel of the calibration histograms (bounded memory).
        calib_batch_size: Images per onnxruntime call during calibration.
        progress: Show progress bars.
        second_stage: DNI's second stage (``passes/balance_potentials.py``): simulate the
            converted network on calibration images and shift each channel's initial
            potential so its mean output matches the ANN's.
        second_stage_samples: Calibration images the second stage simulates (the first N).
        second_stage_sweeps: Simulations per calibrated T; each corrects every layer.
        allow_analog: ONNX op types (e.g. ``("Sigmoid",)``) that may run, not spiking, on
            the time-averaged signal; empty by default (``--allow-analog``).
    """

    timesteps: tuple[int, ...] = (32,)
    theta_neg: str = "zero"
    max_spikes_per_step: int = 1024
    resolution: int | None = None
    resolution_candidates: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
    output_tolerance: float = 0.05
    level_search: str = "network"
    coarse_levels: tuple[int, ...] = (4, 8)
    level_search_budget: float = 5e10
    granularity: str = "channel"
    initial_potential: str = "dni"
    threshold_percentiles: tuple[float, ...] = (
        90.0, 95.0, 97.0, 98.0, 99.0, 99.5, 99.7, 99.9, 99.95, 99.99, 100.0)
    threshold_search: bool = True
    histogram_bins: int = 2048
    calib_batch_size: int = 64
    progress: bool = True
    second_stage: bool = True
    second_stage_samples: int = 256
    second_stage_sweeps: int = 2
    allow_analog: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.timesteps or any(int(t) < 1 for t in self.timesteps):
            raise ValueError(f"timesteps must be positive integers, got {self.timesteps}")
        if self.theta_neg not in NEGATIVE_THRESHOLDS:
            raise ValueError(f"theta_neg must be one of {NEGATIVE_THRESHOLDS}")
        if self.initial_potential not in INITIAL_POTENTIALS:
            raise ValueError(f"initial_potential must be one of {INITIAL_POTENTIALS}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}")
        if self.max_spikes_per_step < 1:
            raise ValueError("max_spikes_per_step must be at least 1")
        if self.resolution is not None and self.resolution < 1:
            raise ValueError("resolution must be at least 1")
        if not self.resolution_candidates or min(self.resolution_candidates) < 1:
            raise ValueError("resolution_candidates must be positive integers")
        if not self.output_tolerance > 0:
            raise ValueError("output_tolerance must be positive")
        if self.level_search not in LEVEL_SEARCHES:
            raise ValueError(f"level_search must be one of {LEVEL_SEARCHES}")
        if any(int(r) < 1 for r in self.coarse_levels):
            raise ValueError("coarse_levels must be positive integers")
        if not self.level_search_budget >= 0:
            raise ValueError("level_search_budget must be at least 0")
        if self.second_stage_samples < 1 or self.second_stage_sweeps < 1:
            raise ValueError("second_stage_samples and second_stage_sweeps must be at least 1")


    @property
    def resolutions(self) -> tuple[int, ...]:
        """The resolutions that calibration prepares: the fixed one, or the candidates."""
        if self.resolution is not None:
            return (self.resolution,)
        return tuple(sorted(set(self.resolution_candidates)))

    @property
    def layer_resolutions(self) -> tuple[int, ...]:
        """What a single layer may get: :attr:`resolutions`, plus ``coarse_levels`` when
        the layer search runs."""
        if self.resolution is not None or self.level_search != "layer":
            return self.resolutions
        return tuple(sorted(set(self.resolution_candidates) | set(self.coarse_levels)))

    def levels_per_step(self, timesteps: int, resolution: int | None = None) -> int:
        """Spikes per step that the thresholds for target ``timesteps`` are chosen for:
        enough for ``resolution`` levels over the run (default: ``self.resolution``, or
        the fewest candidate), at most ``max_spikes_per_step``."""
        levels = resolution or self.resolution or self.resolutions[0]
        return max(1, min(self.max_spikes_per_step, math.ceil(levels / timesteps)))

    def has_room(self, timesteps: int, resolution: int) -> bool:
        """Whether thresholds for ``resolution`` levels at target ``timesteps`` leave the
        neurons room to catch up: a burst cap of at least ``CATCH_UP_ROOM`` times the
        spikes per step the thresholds are chosen for (see :attr:`burst_size`)."""
        return CATCH_UP_ROOM * math.ceil(resolution / timesteps) <= self.max_spikes_per_step

    @property
    def burst_size(self) -> int:
        """The neurons' ``max_spikes_per_step``, whatever the thresholds were chosen for.

        Why not just :meth:`levels_per_step`: a deep layer's input does not arrive evenly.
        Its neuron fires early on what the layers before sent first and must take spikes
        back or catch up later, at most ``max_spikes_per_step`` a step. With room to catch
        up, the spikes it has sent after T steps are ``floor((v0 + input) / theta)`` of its
        whole input, as for a constant one; a cap as small as the burst the thresholds are
        chosen for leaves it behind (docs/algorithm.md, "Room to catch up")."""
        return self.max_spikes_per_step


@dataclass
class CompileContext:
    """What the passes of one compilation share.

    Attributes:
        config: The user's choices.
        calibration_batches: Called with no argument, returns an iterator of feeds
            (``{input_name: float32 array}``); None when no calibration data was given.
        calibration_size: Number of calibration samples, for progress bars.
        neuron_params: Filled by ``calibrate_neurons``: activation tensor name -> DNI
            parameters (theta and v0 of shape (len(timesteps), C)).
        report: Human-readable lines that passes want the user to see.
        readout: Filled by ``mark_readout``: graph output name -> readout kind.
        second_stage_ann: Filled by ``record_second_stage_stats`` (second stage only): the
            ANN before its Relus are replaced, which the second stage's targets come from
            (:class:`snncompiler.passes.balance_potentials.SecondStageAnn`).
        second_stage_reference: Filled by ``balance_potentials``: the ANN's output on the
            held-out images that check the second stage's shifts.
        second_stage_outcomes: One line per target T: what the check kept or reverted.
        resolution_params: Filled by ``calibrate_neurons`` when the resolution is chosen
            (``config.resolution`` None): candidate resolution -> {activation tensor name ->
            DNI parameters}; ``neuron_params`` holds the fewest candidate's.
        resolution_ann: With ``resolution_params``: the ANN (an ONNX ModelProto) and the
            name of its readout, for the reference that the choice compares with.
        chosen_resolution: Filled by ``choose_resolution``: target T -> resolution.
        layer_levels: Filled by ``choose_resolution`` where its layer search ran: target T
            -> {activation tensor name -> resolution}.
        dry_run: Check and lower the graph without calibration data (placeholder neuron
            parameters), for ``snnc inspect`` and early error reporting.
        cluster: Where the passes run their work over calibration images: None, here; or
            a :class:`snncompiler.distributed.Cluster`, whose ``activation_stats`` and
            ``channel_means`` stand for ``collect_activation_stats`` and
            ``snn_channel_means`` and give the same results, bit for bit.
    """

    config: CompileConfig
    calibration_batches: Callable[[], Iterator[dict[str, np.ndarray]]] | None = None
    calibration_size: int | None = None
    neuron_params: dict = field(default_factory=dict)
    report: list[str] = field(default_factory=list)
    readout: dict = field(default_factory=dict)
    second_stage_ann: SecondStageAnn | None = None
    second_stage_reference: np.ndarray | None = None
    second_stage_outcomes: list[str] = field(default_factory=list)
    resolution_params: dict = field(default_factory=dict)
    resolution_ann: tuple | None = None
    chosen_resolution: dict = field(default_factory=dict)
    layer_levels: dict = field(default_factory=dict)
    dry_run: bool = False
    cluster: Cluster | None = None
