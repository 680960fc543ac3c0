"""Calibration and evaluation on a Dask cluster: shards of the data go to the workers, and
their results merge into exactly what one machine computes.

    from snncompiler.distributed import open_cluster

    with open_cluster(scheduler="tcp://host:8786") as cluster:   # or workers=4: a LocalCluster
        compiled = compile_model("model.onnx", calibration, config, cluster=cluster)
        result = cluster.evaluate("model.snn", "test.npz", [1, 4, 32], onnx="model.onnx")

``snnc --scheduler ADDRESS`` / ``--workers N`` (compile and eval) do the same. Dask is an
optional dependency (``pip install 'snncompiler[dask]'``), imported only here and only
when a cluster is opened; the workers need snncompiler installed, in the same version.

Exact merging. Every shard is a run of whole batches, the batches a one-machine run would
make, and its result is kept per batch, keyed by the shard's index:

- Evaluation: each batch gives the SNN's top-1 class per T, the ANN's top-1 class, and
  the engine's counters, per sample (:class:`~snncompiler.evaluate.BatchRun`);
  :func:`~snncompiler.evaluate.summarize` merges them in sample order. Accuracies are
  counts of whole numbers and the work is combined batch after batch, as on one machine,
  so the result (and ``--json``, timing aside) is the same.
- Calibration statistics: a histogram's range depends on the order of the batches (it
  starts at the first batch's maximum and grows by powers of two) and its bin sums are
  float additions, so histograms of shards do not merge exactly. Instead, a first pass
  computes every batch's per-channel maxima on the workers; the client replays the range
  growth in batch order (:func:`~snncompiler.passes.calibration_stats.grown_upper`) to
  know the range the local run bins each batch at; a second pass bins every batch at its
  range on the workers (:func:`~snncompiler.passes.calibration_stats.bin_batch`); and the
  client adds the bins batch after batch, with the same merges in between
  (:meth:`~snncompiler.passes.calibration_stats.ChannelHistogram.extend`,
  :meth:`~snncompiler.passes.calibration_stats.ChannelHistogram.add_binned`): the same
  float operations in the same order as :meth:`ChannelHistogram.update`, so the same
  histograms, bit for bit. The price is running the ANN twice per batch.
- The second stage's simulations: sums of net spike counts per channel, whole numbers,
  which add up exactly from shards cut at the engine's batches
  (:func:`~snncompiler.passes.balance_potentials.spike_sums`). Its targets (one pass of
  the ANN over its ``second_stage_samples`` images,
  :func:`~snncompiler.passes.balance_potentials.second_stage_targets`) and the ANN's
  outputs on the held-out ones are computed on the client.

So a compile on a cluster writes the same ``.snn`` bytes as one on the client, given
workers whose onnxruntime computes the same activations as the client's (same library
and CPU kind; a worker that computes another maximum in the second pass than in the first
is refused with an error rather than silently binned).

Data. Evaluation sends paths: each worker reads the ``.snn``, the ``.npz`` (whole, with
the same preprocessing) and the ONNX model itself, once, and keeps them in a small cache
keyed by path, modification time and size; a shared file system (or the same files at the
same absolute paths) is what it needs. Calibration images travel with the tasks (the
client holds them); the ANN as the compiler has rewritten it exists only on the client and
is broadcast to every worker once per statistics pass, the program once per second-stage
simulation. ``snnc eval --layers`` runs its extra simulations on the client.

Faults. A task whose worker dies is run again on another worker by Dask (up to
``distributed.scheduler.allowed-failures`` times); since results are kept by shard index,
nothing is lost or counted twice. An unreachable scheduler is a :class:`ClusterError`
after ``timeout`` seconds, before any work.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from snncompiler.errors import CalibrationError, ClusterError, InputError
from snncompiler.npz import Dataset, Preprocessing, check_input_shape, load_npz
from snncompiler.runtime.engine import DEFAULT_MEMORY_BUDGET, SpikingNetwork

CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a scheduler before giving up (``--scheduler``)."""

_CACHE_SIZE = 8  # worker-side: loaded networks, data sets, ANN sessions


def _dask():
    """The ``distributed`` package, or a one-line error saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise InputError("--scheduler and --workers need Dask: pip install "
                         "'snncompiler[dask]'") from None
    return distributed


@contextlib.contextmanager
def open_cluster(scheduler: str | None = None, workers: int | None = None, *,
                 timeout: float | None = None) -> Iterator[Cluster | None]:
    """The cluster to run on: None (run here) when neither argument is given.

    Args:
        scheduler: Address of the scheduler of a running Dask cluster
            (``tcp://host:8786``).
        workers: Start a ``distributed.LocalCluster`` of this many worker processes (one
            thread each) instead, closed on exit.
        timeout: Seconds to wait for the scheduler (default :data:`CONNECT_TIMEOUT`).

    Raises:
        InputError: Both arguments, or Dask not installed.
        ClusterError: The scheduler does not answer.
    """
    if scheduler is not None and workers is not None:
        raise InputError("give --scheduler or --workers, not both")
    if scheduler is None and workers is None:
        yield None
        return
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    cluster = Cluster.connect(scheduler, timeout) if scheduler is not None \
        else Cluster.local(workers)
    try:
        yield cluster
    finally:
        cluster.close()


class Cluster:
    """A Dask client, and the calibration and evaluation work it sends to its workers.

    ``activation_stats`` and ``channel_means`` stand in for
    :func:`~snncompiler.passes.calibration_stats.collect_activation_stats` and
    :func:`~snncompiler.passes.balance_potentials.snn_channel_means` (see
    ``CompileContext.cluster``); :meth:`evaluate` for :func:`snncompiler.evaluate.evaluate`.
    Each returns what its local counterpart returns, bit for bit.
    """

    def __init__(self, client, local_cluster=None):
        self.client = client
        self._local_cluster = local_cluster

    @classmethod
    def connect(cls, address: str, timeout: float = CONNECT_TIMEOUT) -> Cluster:
        """Connects to the scheduler at ``address``.

        Raises:
            ClusterError: It does not answer within ``timeout`` seconds.
        """
        distributed = _dask()
        from distributed.comm import parse_address, registry
        from distributed.comm.addressing import parse_host_port

        # Checked here: a Client that fails on a malformed address is left half started,
        # and hangs the interpreter's exit for its close timeout.
        try:
            scheme, location = parse_address(address)
            registry.get_backend(scheme)
            if scheme in ("tcp", "tls", "ws", "wss"):
                parse_host_port(location)
        except (ValueError, TypeError) as error:
            raise ClusterError(f"--scheduler {address!r} is not the address of a Dask "
                               f"scheduler ({error}); give one as tcp://host:8786") from None
        try:
            client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except OSError:
            raise ClusterError(f"cannot reach the Dask scheduler at {address} within "
                               f"{timeout:g} s: is it running, and is the address right "
                               "(tcp://host:8786)?") from None
        return cls(client)

    @classmethod
    def local(cls, workers: int) -> Cluster:
        """Starts a LocalCluster of ``workers`` processes with one thread each, numba's
        included (``NUMBA_NUM_THREADS=1``: the engine would otherwise run as many threads
        as the machine has cores in every worker; results do not depend on it)."""
        if workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}")
        distributed = _dask()
        # Errors of tasks reach the client as exceptions; what the workers would log on
        # their own is the noise of shutting down (a heartbeat to a closed scheduler).
        local = distributed.LocalCluster(n_workers=workers, processes=True,
                                         threads_per_worker=1, dashboard_address=":0",
                                         silence_logs=logging.CRITICAL,
                                         env={"NUMBA_NUM_THREADS": "1"})
        return cls(distributed.Client(local, set_as_default=False), local)

    def close(self) -> None:
        self.client.close()
        if self._local_cluster is not None:
            self._local_cluster.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ tasks

    def _map(self, what: str, function: Callable, tasks: list[tuple],
             sizes: list[int] | None = None, bar=None) -> Iterator[tuple[int, object]]:
        """Runs ``function(*task)`` for every task on the workers; yields ``(index, result)``
        as each finishes. Every task has a key of its own (``snnc-WHAT-TOKEN-INDEX``), so a
        task that Dask reruns after its worker died still has one result. ``bar`` is
        advanced by ``sizes[index]`` per finished task.

        Raises:
            The first error a task raised (the rest are cancelled), or ClusterError for a
            task whose workers kept dying.
        """
        distributed = _dask()
        token = uuid.uuid4().hex[:12]
        futures = {self.client.submit(function, *task, key=f"snnc-{what}-{token}-{index}",
                                      pure=False): index
                   for index, task in enumerate(tasks)}
        try:
            for future in distributed.as_completed(list(futures), loop=self.client.loop):
                index = futures[future]
                try:
                    result = future.result()
                except distributed.KilledWorker as error:
                    raise ClusterError(f"{what} shard {index}: the workers running it kept "
                                       f"dying ({error})") from None
                if bar is not None and sizes is not None:
                    bar.update(sizes[index])
                yield index, result
                future.release()
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def _ordered(self, *args, **kwargs) -> Iterator[object]:
        """:meth:`_map`'s results in task order, each as soon as those before it are in."""
        waiting, following = {}, 0
        for index, result in self._map(*args, **kwargs):
            waiting[index] = result
            while following in waiting:
                yield waiting.pop(following)
                following += 1

    # ------------------------------------------------------------------ calibration

    def activation_stats(self, model, tensor_names: list[str],
                         batches: Iterable[dict[str, np.ndarray]], *, bins: int = 2048,
                         progress: bool = True, total: int | None = None) -> dict:
        """:func:`~snncompiler.passes.calibration_stats.collect_activation_stats` on the
        workers, one task per batch, in two passes (see the module docstring).

        Returns:
            Tensor name -> ChannelHistogram, equal bit for bit to the local result.
        """
        from tqdm import tqdm

        from snncompiler.passes.calibration_stats import ChannelHistogram, grown_upper

        names = list(dict.fromkeys(tensor_names))
        if not names:
            return {}
        feeds = list(batches)
        if not feeds:
            raise CalibrationError("calibration data holds no images: the batch iterator "
                                   "was empty")
        data = model.SerializeToString()
        digest = hashlib.sha256(data).hexdigest()
        shared = self.client.scatter(data, broadcast=True, hash=False)
        sizes = [len(next(iter(feed.values()))) if feed else 0 for feed in feeds]

        # Pass 1: every batch's maxima; the client replays the range growth in batch order.
        ranges = []
        with tqdm(total=total, desc="calibration ranges", unit="images",
                  disable=not progress) as bar:
            found = list(self._ordered(
                "ranges", _batch_maxima,
                [(shared, digest, names, number, feed) for number, feed in enumerate(feeds)],
                sizes, bar))
        channels = {}
        upper = {}
        for number, batch in enumerate(found):
            for name in names:
                maxima, _, shape = batch[name]
                channels.setdefault(name, shape[1])
                if shape[1] != channels[name]:
                    raise CalibrationError(
                        f"tensor {name!r}, batch {number}: expected an activation of shape "
                        f"(N, {channels[name]}, ...), got {shape}")
                previous = upper.get(name, np.zeros(channels[name]))
                upper[name] = grown_upper(previous, maxima.astype(np.float64))[0]
            ranges.append(dict(upper))

        # Pass 2: every batch binned at its range; the client adds them in batch order.
        hists = {name: ChannelHistogram(channels[name], bins) for name in names}
        tasks = [(shared, digest, names, number, feed, ranges[number],
                  {name: found[number][name][0] for name in names}, bins)
                 for number, feed in enumerate(feeds)]
        with tqdm(total=total, desc="calibrating", unit="images", disable=not progress) as bar:
            for number, binned in enumerate(self._ordered("bins", _batch_bins, tasks, sizes,
                                                          bar)):
                for name in names:
                    maxima, values, _ = found[number][name]
                    hists[name].extend(maxima, values)
                    hists[name].add_binned(binned[name])
        return hists

    def channel_means(self, program, images: np.ndarray, steps: int, names: list[str], *,
                      readout: bool = False, bar=None):
        """:func:`~snncompiler.passes.balance_potentials.snn_channel_means` on the workers:
        one task per batch of the engine's, the spike counts summed on the client."""
        from snncompiler.passes import balance_potentials as stage

        batch = stage.simulation_batch(SpikingNetwork(program))
        starts = range(0, len(images), batch)
        if len(images) == 0:
            return stage.snn_channel_means(program, images, steps, names, readout=readout)
        shared = self.client.scatter(program, broadcast=True, hash=False)
        parts = list(self._ordered(
            "second-stage", stage.spike_sums,
            [(shared, images[first:first + batch], steps, names) for first in starts],
            [steps * len(images[first:first + batch]) for first in starts], bar))
        return stage.channel_means(program, stage.SpikeSums.merge(parts), steps, names,
                                   readout=readout)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, snn: str | Path, data: str | Path, timesteps: Iterable[int], *,
                 preprocessing: Preprocessing | None = None, limit: int | None = None,
                 onnx: str | Path | None = None, batch_size: int = 128,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, progress: bool = True,
                 program=None, dataset: Dataset | None = None):
        """:func:`snncompiler.evaluate.evaluate` of the ``.snn`` file ``snn`` on the
        ``.npz`` file ``data`` (with the ANN ``onnx``, if given), one task per batch.

        The workers read the files themselves (paths are made absolute here). ``program``
        and ``dataset``: the file's program and the data as the client already loaded them
        (they are loaded here if not given); the client needs the labels and the program's
        header to merge.

        Returns:
            The EvalResult of a local run (``seconds`` aside).
        """
        from tqdm import tqdm

        from snncompiler.evaluate import parameter_groups, summarize
        from snncompiler.runtime.format import load_program

        start = time.perf_counter()
        preprocessing = preprocessing or Preprocessing()
        snn, data = os.path.abspath(snn), os.path.abspath(data)
        onnx = None if onnx is None else os.path.abspath(onnx)
        program = program if program is not None else load_program(snn)
        if dataset is None:  # checked here, row by row; never held whole
            dataset = load_npz(data, preprocessing, limit, stream=True)
        if len(program.inputs) != 1 or len(program.outputs) != 1:
            raise InputError("evaluation supports networks with one input and one output")
        check_input_shape(dataset, program.inputs[0].name, program.inputs[0].shape)
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        timesteps = sorted(set(int(t) for t in timesteps))
        starts = range(0, len(dataset), batch_size)
        tasks = [(snn, memory_budget, data, preprocessing, limit, onnx, timesteps, first,
                  min(first + batch_size, len(dataset))) for first in starts]
        runs = len(parameter_groups(program, timesteps))
        with tqdm(total=len(dataset) * runs, desc="evaluating", unit="img",
                  disable=not progress, leave=False) as bar:
            batches = list(self._ordered("eval", _evaluate_batch, tasks,
                                         [runs * (stop - first) for *_, first, stop in tasks],
                                         bar))
        return summarize(program, batches, timesteps, dataset.y,
                         seconds=time.perf_counter() - start)


# ---------------------------------------------------------------------- on the workers

_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()


def _cached(key, make: Callable):
    """A worker's small cache: ``make()`` once per key, the last few kept."""
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = make()
    with _cache_lock:
        _cache[key] = value
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return value


def _file_key(path: str) -> tuple:
    """What identifies a file's content for the cache: its path, modification time, size."""
    stat = os.stat(path)
    return path, stat.st_mtime_ns, stat.st_size


def _activations(shared: bytes, digest: str, names: list[str]):
    from onnx import ModelProto

    from snncompiler.passes.calibration_stats import ActivationSession

    def make():
        model = ModelProto()
        model.ParseFromString(shared)
        return ActivationSession(model, names)

    return _cached(("activations", digest, tuple(names)), make)


def _tensors(session, names: list[str], number: int, feed: dict) -> dict[str, np.ndarray]:
    """The activations of one calibration batch, with their channel axis checked."""
    from snncompiler.passes.calibration_stats import channels_of

    tensors = session.activations(feed, number)
    for name in names:
        channels_of(name, tensors[name])
    return tensors


def _batch_maxima(shared: bytes, digest: str, names: list[str], number: int,
                  feed: dict) -> dict[str, tuple]:
    """Pass 1 of ``activation_stats``: ``{name: (maxima, values, shape)}`` of one batch."""
    from snncompiler.passes.calibration_stats import batch_maxima

    tensors = _tensors(_activations(shared, digest, names), names, number, feed)
    found = {}
    for name in names:
        tensor = tensors[name]
        try:
            maxima, values = batch_maxima(tensor, tensor.shape[1])
        except (ValueError, CalibrationError) as err:
            raise CalibrationError(f"tensor {name!r}, batch {number}: {err}") from err
        found[name] = maxima, values, tuple(tensor.shape)
    return found


def _batch_bins(shared: bytes, digest: str, names: list[str], number: int, feed: dict,
                upper: dict[str, np.ndarray], maxima: dict[str, np.ndarray],
                bins: int) -> dict[str, list]:
    """Pass 2 of ``activation_stats``: one batch's bins at the ranges the client computed."""
    from snncompiler.passes.calibration_stats import bin_batch

    tensors = _tensors(_activations(shared, digest, names), names, number, feed)
    binned = {}
    for name in names:
        try:
            binned[name] = bin_batch(tensors[name], upper[name], bins, maxima[name])
        except (ValueError, CalibrationError) as err:
            raise CalibrationError(f"tensor {name!r}, batch {number}: {err}") from err
    return binned


def _evaluate_batch(snn: str, memory_budget: int, data: str, preprocessing: Preprocessing,
                    limit: int | None, onnx: str | None, timesteps: list[int], first: int,
                    stop: int):
    """One batch of ``Cluster.evaluate``: samples ``first:stop`` of the data."""
    from snncompiler.evaluate import evaluate_batch
    from snncompiler.runtime import load

    # A network holds the state of its run: one per thread that may run tasks at once.
    net = _cached(("net", _file_key(snn), memory_budget, threading.get_ident()),
                  lambda: load(snn, memory_budget=memory_budget))
    # The client checked every row of this file (the key changes when it is rewritten); each
    # batch is checked again as it is read, so the worker skips the pass over the whole file.
    dataset = _cached(("data", _file_key(data), preprocessing, limit),
                      lambda: load_npz(data, preprocessing, limit, stream=True,
                                       check_rows=False))
    ann = None if onnx is None else _cached(("ann", _file_key(onnx)), lambda: _ann(onnx))
    return evaluate_batch(net, dataset.x[first:stop], timesteps, ann=ann)


def _ann(path: str) -> Callable[[np.ndarray], np.ndarray]:
    """The ANN's outputs for a batch, by onnxruntime (as ``snnc eval --onnx`` runs it)."""
    from snncompiler import frontend

    session = frontend.ort_session(frontend.load_model(path))
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]
