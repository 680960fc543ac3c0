"""The ``snnc`` command line.

    snnc MODEL.onnx -o OUT.snn --calib CALIB.npz [-T 32] [--calib-samples N]
    snnc eval OUT.snn --data TEST.npz -T 1,2,4,8,16,32 [--onnx MODEL.onnx] [--json FILE]
    snnc inspect FILE
    snnc demo
    snnc export OUT.snn -o STEP.onnx [--timesteps-for T]
    snnc report RESULTS.json -o REPORT.html [--snn OUT.snn]

Every error the user can cause, usage errors included, ends in one line on stderr
(``error: ...``) and exit code 1; an interruption in ``error: interrupted`` and exit code 130.
Anything else is a bug: ``internal error: <type>: <message>`` and exit code 2, with the
traceback under ``snnc --debug`` or ``SNNC_DEBUG=1``.

No lost work: every check that can fail runs before the work does (arguments, data, output
paths, the memory a run needs); outputs are written to a temporary file and renamed into
place; an existing output is replaced only with ``--force``, and an input never.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import traceback
from functools import wraps
from pathlib import Path

import click

from snncompiler import __version__
from snncompiler.context import GRANULARITIES, INITIAL_POTENTIALS, LEVEL_SEARCHES, CompileConfig
from snncompiler.errors import InputError, SnnError
from snncompiler.evaluate import parse_timesteps
from snncompiler.files import write_text_atomically
from snncompiler.runtime.opset import NEGATIVE_THRESHOLDS

EXIT_ERROR = 1
EXIT_INTERNAL = 2
EXIT_INTERRUPTED = 130

DEFAULT_MAX_MEMORY = 2 * 2**30
"""Bytes ``snnc eval`` plans a run within (``--max-memory``), before allocating anything."""

_CHUNK_BUDGET = 256 * 2**20  # the engine's default time-chunk budget (engine.py)
_DEMO_BATCH = 128  # the batch size run_demo evaluates with (evaluate's default)
_MAX_LINE = 1000  # characters of an error line, whatever a hostile file put in it


# --------------------------------------------------------------------------- errors


class _Cli(click.Group):
    """The snnc group: a first argument that is not a command is a model to compile, and
    click's own usage errors are reported like ours (one line, exit code 1)."""

    def parse_args(self, ctx, args):
        skip = 0
        while skip < len(args) and args[skip] == "--debug":
            skip += 1
        rest = args[skip:]
        if rest and rest[0] not in self.commands and not rest[0].startswith("-"):
            args = [*args[:skip], "compile", *rest]
        return super().parse_args(ctx, args)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False,
                                **extra)
        except click.exceptions.Abort:
            _fail("interrupted", EXIT_INTERRUPTED)
        except click.ClickException as error:
            context = getattr(error, "ctx", None)
            hint = f" (see '{context.command_path} --help')" if context is not None else ""
            _fail(error.format_message() + hint)
        sys.exit(code if isinstance(code, int) else 0)


def _friendly_errors(command):
    """Turns expected failures into one line and a non-zero exit, and bugs into exit 2."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SnnError as error:
            _fail(str(error))
        except MemoryError:
            _fail("out of memory: try a smaller --batch-size, fewer timesteps or --limit")
        except OSError as error:
            where = os.fsdecode(error.filename) if error.filename is not None else ""
            what = error.strerror or str(error)
            _fail(f"{where}: {what}" if where else what)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except Exception as error:
            _fail(f"{type(error).__name__}: {error} (this is a bug in snncompiler {__version__}:"
                  " please report it with the command that caused it; --debug shows the "
                  "traceback)", EXIT_INTERNAL, prefix="internal error: ")

    return wrapper


def _debugging() -> bool:
    context = click.get_current_context(silent=True)
    if context is not None and context.find_root().params.get("debug"):
        return True
    return os.environ.get("SNNC_DEBUG", "") not in ("", "0")


def _fail(message: str, code: int = EXIT_ERROR, prefix: str = "error: "):
    if _debugging() and sys.exc_info()[0] is not None:
        traceback.print_exc(file=sys.stderr)
    click.echo(prefix + printable(message), err=True)
    sys.exit(code)


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` safe for a terminal: control characters escaped (``\\x1b``), one line of
    bounded length unless ``lines``. Names in models and data files come from anyone."""
    if lines:
        return "\n".join(printable(line) for line in str(text).split("\n"))
    # Line breaks become spaces (one line per message) but runs of spaces stay: tables
    # are aligned with them.
    text = "".join(" " if c in "\r\n\t\v\f" else c for c in str(text)).rstrip()
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= _MAX_LINE else text[: _MAX_LINE - 3] + "..."


def _echo(text: str) -> None:
    click.echo(printable(text, lines=True))


def _quiet_libraries() -> None:
    """Silences what the ONNX libraries print on their own: onnx-graphsurgeon's warnings (a
    subgraph it could not fold) on stdout, onnxruntime's C++ log (the same failure, again)
    on stderr. Their failures reach the user as our one-line error; --debug keeps them."""
    if not _debugging():
        import onnxruntime
        from onnx_graphsurgeon.logger import G_LOGGER

        G_LOGGER.severity = G_LOGGER.ERROR
        onnxruntime.set_default_logger_severity(4)  # fatal only


# --------------------------------------------------------------------------- arguments

def _parse_resolution(ctx, param, value) -> int | None:
    """``--resolution``: "auto" (None, chosen per T) or a whole number of levels >= 1."""
    if value is None or str(value).strip().lower() == "auto":
        return None
    try:
        levels = int(value)
    except ValueError:
        levels = 0
    if levels < 1:
        raise click.BadParameter(f"{value!r} is neither 'auto' nor a whole number >= 1")
    return levels


def _check_output(path, force: bool, **inputs) -> None:
    """Refuses, before any work, an output that cannot be written or would destroy a file.

    ``inputs`` (by what they are, e.g. ``model=...``) are never overwritten, even with
    ``force``; another existing file only with ``force``.
    """
    target = Path(path)
    folder = target.resolve().parent
    if not folder.is_dir():
        raise InputError(f"{path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write into {folder} (permission denied)")
    for what, source in inputs.items():
        if source is not None and _same_file(target, Path(source)):
            raise InputError(f"{path} is also the {what.replace('_', ' ')} (an input); "
                             "refusing to overwrite it: choose another output name")
    if os.path.lexists(target) and not force:
        raise InputError(f"{path} exists; pass --force to overwrite it")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return a.resolve() == b.resolve()


# --------------------------------------------------------------------------- memory


def activation_sizes(program) -> dict[str, int]:
    """Per-sample element counts the memory estimate needs."""
    shapes = [tuple(s.shape) for s in program.inputs] + [tuple(n.shape) for n in program.nodes]
    return {"inputs": sum(math.prod(s.shape) for s in program.inputs),
            "outputs": sum(math.prod(s.shape) for s in program.outputs),
            "largest": max(math.prod(shape) for shape in shapes)}


def chunk_budget(max_memory: int) -> int:
    """Bytes of activations per time chunk: the engine's default, or less under a low limit
    (a smaller budget means shorter time chunks, not different results)."""
    return max(1, min(_CHUNK_BUDGET, max_memory // 4))


def eval_memory(sizes: dict[str, int], steps: int, batch: int, budget: int) -> int:
    """Bytes a run of ``steps`` steps on ``batch`` samples needs at its peak, estimated.

    The readout (``steps x batch x outputs`` float32) is counted twice: the engine's graph
    executor holds the chunks' parts and their concatenation at the end of a run (the fused
    executor writes one array, so this is an upper bound). One time chunk of activations
    takes about ``budget`` (the engine sizes chunks to it), and at least one step: four live
    float32 tensors of the largest activation, as the engine itself reckons. The neuron
    state (``sizes["state"]``, bytes per sample, if given) is held for the samples simulated
    at once, which ``evaluate`` keeps within the budget but never below one sample.
    """
    readout = 2 * 4 * steps * batch * sizes["outputs"]
    one_step = 4 * 4 * batch * sizes["largest"]
    return (readout + max(budget, one_step) + 4 * batch * sizes["inputs"]
            + sizes.get("state", 0))


def plan_batch(sizes: dict[str, int], steps: int, batch: int, max_memory: int) -> int:
    """The largest batch up to ``batch`` whose run fits ``max_memory``.

    Raises:
        InputError: Not even one sample at a time fits.
    """
    budget = chunk_budget(max_memory)
    if eval_memory(sizes, steps, 1, budget) > max_memory:
        need = eval_memory(sizes, steps, 1, budget)
        raise InputError(f"T={steps} needs {need / 2**30:.1f} GiB even one sample at a time "
                         f"(a readout of {steps} steps x {sizes['outputs']} outputs and "
                         f"{sizes.get('state', 0) / 2**20:.0f} MiB of neuron state), more "
                         f"than --max-memory {max_memory / 2**30:g} GiB; use fewer timesteps "
                         "or a larger --max-memory")
    low, high = 1, batch  # eval_memory grows with the batch: bisect for the largest fit
    while low < high:
        middle = (low + high + 1) // 2
        if eval_memory(sizes, steps, middle, budget) <= max_memory:
            low = middle
        else:
            high = middle - 1
    return low


# --------------------------------------------------------------------------- options


def _preprocessing_options(command):
    for option in reversed([
        click.option("--scale", type=float, help="Multiply inputs by this (e.g. 1/255)."),
        click.option("--mean", type=float, help="Then subtract this."),
        click.option("--std", type=float, help="Then divide by this."),
    ]):
        command = option(command)
    return command


def _config_options(command):
    # Defaults and choices come from CompileConfig, so that snnc and the Python API agree.
    default = CompileConfig()
    for option in reversed([
        click.option("-T", "--timesteps", default=",".join(map(str, default.timesteps)),
                     show_default=True,
                     help="Target T, or a comma list: one DNI parameter set per value."),
        click.option("--theta-neg", type=click.Choice(NEGATIVE_THRESHOLDS),
                     default=default.theta_neg, show_default=True,
                     help="SNM negative threshold: 0, -theta, or off (plain IF neuron)."),
        click.option("--initial-potential", type=click.Choice(INITIAL_POTENTIALS),
                     default=default.initial_potential, show_default=True,
                     help="Initial membrane potential: DNI search, theta/2 or 0."),
        click.option("--granularity", type=click.Choice(GRANULARITIES),
                     default=default.granularity, show_default=True,
                     help="Thresholds per channel or layer."),
        click.option("--max-spikes", type=click.IntRange(1, 1024),
                     default=default.max_spikes_per_step, show_default=True,
                     help="Most spikes per neuron and step (1 = the paper's neuron)."),
        click.option("--resolution", default="auto", show_default=True,
                     callback=_parse_resolution,
                     help="Threshold steps a neuron's output can take over a run, at least: "
                          "a target T below it gets bursts of ceil(resolution / T) spikes "
                          "(at most --max-spikes); 1 = single spikes. auto: the fewest of "
                          f"{', '.join(map(str, default.resolution_candidates))} whose "
                          "output is within --output-tolerance of the ANN's on held-out "
                          "calibration images, per T."),
        click.option("--output-tolerance", type=click.FloatRange(0, min_open=True),
                     default=default.output_tolerance, show_default=True,
                     help="For --resolution auto: the readout error ||SNN - ANN|| / ||ANN|| "
                          "accepted on held-out calibration images (smaller: more levels, "
                          "more synaptic operations)."),
        click.option("--level-search", type=click.Choice(LEVEL_SEARCHES),
                     default=default.level_search, show_default=True,
                     help="For --resolution auto: one level count for every layer "
                          "(network), or refined layer by layer (layer): fewer levels where "
                          "they save the most synaptic operations, up to --output-tolerance; "
                          "networks too large for its simulation budget keep the network's "
                          "count."),
        click.option("--second-stage/--no-second-stage", default=default.second_stage,
                     show_default=True,
                     help="DNI's second stage: simulate on calibration data and shift initial "
                          "potentials so mean outputs match the ANN (see "
                          "docs/results/fidelity.md)."),
        click.option("--second-stage-samples", type=click.IntRange(2),
                     default=default.second_stage_samples, show_default=True,
                     help="Calibration samples the second stage simulates (the first N; half "
                          "fit the shifts, half check them): most of a large model's compile "
                          "time."),
    ]):
        command = option(command)
    return command


def _cluster_options(command):
    for option in reversed([
        click.option("--scheduler", metavar="ADDRESS",
                     help="Run the work over the data on the workers of this Dask cluster "
                          "(tcp://host:8786); the results are the same as here. Needs "
                          "snncompiler[dask]."),
        click.option("--workers", type=click.IntRange(1), default=None,
                     help="Start a local Dask cluster of N worker processes (one thread "
                          "each) instead."),
    ]):
        command = option(command)
    return command


def _analog_ops(ctx, param, text):
    return tuple(op.strip() for op in (text or "").split(",") if op.strip())


def _allow_analog_option(command):
    return click.option(
        "--allow-analog", metavar="OP[,OP]", callback=_analog_ops, default="",
        help="Run these non-spiking ONNX ops (e.g. Sigmoid,Mul) on the time-averaged signal "
             "instead of refusing the model. Off by default; reported as a warning.")(command)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="snnc")
@click.option("--debug", is_flag=True, envvar="SNNC_DEBUG",
              help="Show the traceback of errors (also SNNC_DEBUG=1).")
def main(debug):
    """Convert ONNX ANNs to spiking networks (DNISNM) and run them.

    \b
    snnc MODEL.onnx -o OUT.snn --calib CALIB.npz [-T 32]
    snnc eval OUT.snn --data TEST.npz -T 1,2,4,8,16,32 [--onnx MODEL.onnx]
    snnc inspect FILE
    snnc demo
    snnc export OUT.snn -o STEP.onnx [--timesteps-for T]
    snnc report RESULTS.json -o REPORT.html [--snn OUT.snn]
    """


# --------------------------------------------------------------------------- compile


@main.command("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The .snn file to write.")
@click.option("--calib", required=True, type=click.Path(dir_okay=False),
              help=".npz with x (and optional y): calibration inputs.")
@click.option("--calib-samples", type=click.IntRange(1), default=None,
              help="Use only the first N calibration samples.")
@_config_options
@_preprocessing_options
@_allow_analog_option
@_cluster_options
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@_friendly_errors
def compile_command(model, output, calib, calib_samples, timesteps, theta_neg,
                    initial_potential, granularity, max_spikes, resolution, output_tolerance,
                    level_search, second_stage,
                    second_stage_samples, scale,
                    mean, std, allow_analog, scheduler, workers, force, quiet):
    """Compile MODEL (ONNX) to a .snn spiking network."""
    from snncompiler import pipeline
    from snncompiler.distributed import open_cluster
    from snncompiler.npz import Preprocessing, load_npz
    from snncompiler.runtime.format import save_program

    _quiet_libraries()
    steps = parse_timesteps(timesteps)
    for path, what in ((model, "model"), (calib, "calibration data")):
        if not Path(path).is_file():
            raise InputError(f"{path}: no such {what} file")
    _check_output(output, force, model=model, calibration_data=calib)
    config = CompileConfig(
        timesteps=tuple(steps), theta_neg=theta_neg, initial_potential=initial_potential,
        granularity=granularity, max_spikes_per_step=max_spikes, resolution=resolution,
        output_tolerance=output_tolerance, level_search=level_search, progress=not quiet,
        allow_analog=allow_analog, second_stage=second_stage,
        second_stage_samples=second_stage_samples)
    with open_cluster(scheduler, workers) as cluster:
        # Streamed: the compile holds a batch of the calibration data at a time, so its
        # memory does not grow with the number of images.
        calibration = load_npz(calib, Preprocessing(scale, mean, std), limit=calib_samples,
                               stream=True)
        result = pipeline.compile_model(model, calibration, config, cluster=cluster)
    save_program(result.program, output, overwrite=force)
    _print_compile_summary(result, output, quiet)


def _print_compile_summary(result, output, quiet):
    program = result.program
    neurons = program.neuron_nodes()
    channels = sum(n.arrays["theta"].shape[1] for n in neurons)
    _echo(f"wrote {output}: {len(program.nodes)} nodes, {len(neurons)} neuron layers "
          f"({channels} channels), calibrated for T={program.timesteps} on "
          f"{program.calibration.get('samples')} samples in {result.seconds:.1f} s")
    for line in result.report:
        if line.startswith("WARNING"):  # shown even with --quiet
            click.echo(printable(line), err=True)
    if not quiet:
        passes = ", ".join(f"{name} {count}" for name, count in result.pass_counts.items())
        _echo(f"passes: {passes}")
        for line in result.report:
            if not line.startswith("WARNING"):
                _echo(f"  {line}")


# --------------------------------------------------------------------------- eval


@main.command("eval")
@click.argument("snn", type=click.Path(dir_okay=False))
@click.option("--data", required=True, type=click.Path(dir_okay=False),
              help=".npz with x and y (labels).")
@click.option("-T", "--timesteps", default="1,2,4,8,16,32", show_default=True,
              help="Comma list of T to report.")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False),
              help="The source ANN: adds its accuracy and the SNN/ANN agreement.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the results as JSON.")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True,
              help="Samples simulated at once (lowered if a run would not fit --max-memory).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use the first N samples.")
@click.option("--max-memory", type=click.FloatRange(0.01, 1e6), default=DEFAULT_MAX_MEMORY / 2**30,
              show_default=True, help="GiB a run may use; planned before anything is allocated.")
@click.option("--layers", is_flag=True,
              help="Also report each neuron layer's firing rate at every T and, with --onnx, "
                   "the error of its rate against the ANN's activation (extra runs).")
@_preprocessing_options
@_cluster_options
@click.option("--force", is_flag=True, help="Overwrite the --json file if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@_friendly_errors
def eval_command(snn, data, timesteps, onnx_path, json_path, batch_size, limit, max_memory,
                 layers, scale, mean, std, scheduler, workers, force, quiet):
    """Accuracy of SNN (a .snn file) for every T, next to the ANN's."""
    from snncompiler.distributed import open_cluster

    steps = sorted(parse_timesteps(timesteps))
    if json_path:
        _check_output(json_path, force, snn_file=snn, data_file=data, onnx_model=onnx_path)
    with open_cluster(scheduler, workers) as cluster:
        _evaluate(snn, data, steps, onnx_path, json_path, batch_size, limit, max_memory,
                  layers, (scale, mean, std), quiet, cluster)


def _evaluate(snn, data, steps, onnx_path, json_path, batch_size, limit, max_memory, layers,
              preprocessing, quiet, cluster):
    """``snnc eval`` once its arguments are checked: here, or on ``cluster``'s workers."""
    import json

    from snncompiler import evaluate, runtime
    from snncompiler.npz import Preprocessing, check_input_shape, check_labels, load_npz

    limit_bytes = int(max_memory * 2**30)
    net = runtime.load(snn, memory_budget=chunk_budget(limit_bytes))
    program = net.program
    if len(program.inputs) != 1 or len(program.outputs) != 1:
        raise InputError(f"{snn}: evaluation supports networks with one input and one output")
    sizes = {**activation_sizes(program), "state": net.state_bytes()}
    batch = plan_batch(sizes, max(steps), batch_size, limit_bytes)
    preprocessing = Preprocessing(*preprocessing)
    # Streamed, like the compile's calibration data: a batch of it in memory at a time.
    dataset = load_npz(data, preprocessing, limit=limit, stream=True)
    check_input_shape(dataset, program.inputs[0].name, tuple(program.inputs[0].shape))
    check_labels(dataset, sizes["outputs"])
    ann = _ann_function(onnx_path, program) if onnx_path else None
    if batch < batch_size and batch < len(dataset):
        click.echo(f"note: batch size lowered from {batch_size} to {batch} so that T={max(steps)}"
                   f" fits --max-memory {max_memory:g} GiB", err=True)
    if cluster is None:
        result = evaluate.evaluate(net, dataset, steps, ann=ann, batch_size=batch,
                                   progress=not quiet)
    else:
        result = cluster.evaluate(snn, data, steps, preprocessing=preprocessing, limit=limit,
                                  onnx=onnx_path, batch_size=batch,
                                  memory_budget=chunk_budget(limit_bytes), progress=not quiet,
                                  program=program, dataset=dataset)
    click.echo(evaluate.format_table(result))
    _echo("")
    _echo(evaluate.format_activity(result))
    report = result.to_json()
    if layers:
        _echo("")
        report["layers"] = _layer_report(net, dataset.x, steps, onnx_path, batch)
    if json_path:
        write_text_atomically(json_path, json.dumps(report, indent=2) + "\n")


def _layer_report(net, x, steps, onnx_path, batch):
    """``eval --layers``: prints the per-layer table, returns it as JSON-able dicts."""
    from snncompiler import diagnostics, frontend

    ann = None
    if onnx_path:
        names = [node.output for node in net.program.neuron_nodes()]
        ann = diagnostics.ann_activations(frontend.load_model(onnx_path), names)
    found = diagnostics.layer_diagnostics(net, x, steps, ann=ann, batch_size=batch)
    _echo(diagnostics.format_layers(found))  # layer names come from the file: escaped
    if not onnx_path:
        click.echo("note: pass --onnx to compare each layer with the ANN", err=True)
    return [layer.to_json() for layer in found]


def _ann_function(onnx_path, program):
    """onnxruntime on the source ANN, once its input and output fit the SNN's."""
    from snncompiler import frontend

    _quiet_libraries()
    session = frontend.ort_session(frontend.load_model(onnx_path))
    inputs, outputs = session.get_inputs(), session.get_outputs()
    want_in = list(program.inputs[0].shape)
    want_out = math.prod(program.outputs[0].shape)
    got_in = list(inputs[0].shape[1:]) if len(inputs) == 1 else None
    out_dims = outputs[0].shape[1:] if len(outputs) >= 1 else None
    got_out = (math.prod(out_dims) if out_dims is not None
               and all(isinstance(d, int) for d in out_dims) else None)
    if got_in != want_in or got_out not in (None, want_out):
        spell = "?" if got_in is None else ", ".join(map(str, got_in))
        raise InputError(f"--onnx {onnx_path}: takes [N, {spell}] -> {got_out} outputs, but the "
                         f"SNN takes [N, {', '.join(map(str, want_in))}] -> {want_out} outputs; "
                         "is it the model the .snn file was compiled from?")
    name = inputs[0].name
    return lambda x: session.run(None, {name: x})[0]


# --------------------------------------------------------------------------- inspect


@main.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False))
@_allow_analog_option
@_friendly_errors
def inspect_command(file, allow_analog):
    """Show how an ONNX model converts, or a .snn file's header."""
    from snncompiler import inspect

    if _is_zip(file):
        text = inspect.inspect_snn(file)
    else:
        _quiet_libraries()
        text = inspect.inspect_onnx(file, allow_analog)
    _echo(text)


def _is_zip(path) -> bool:
    with open(path, "rb") as stream:
        return stream.read(4) == b"PK\x03\x04"


# --------------------------------------------------------------------------- demo


@main.command("demo")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder to keep demo.snn and results.json in (default: a temporary one).")
@click.option("-T", "--timesteps", default="1,2,4,8,16,32", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite demo.snn and results.json in --out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@_friendly_errors
def demo_command(out, timesteps, force, quiet):
    """Convert and evaluate the shipped Fashion-MNIST CNN, offline."""
    from snncompiler import demo

    steps = sorted(parse_timesteps(timesteps))
    spec, _ = demo.demo_files()
    sizes = {"inputs": 28 * 28, "outputs": len(spec["classes"]), "largest": 0}
    need = eval_memory(sizes, max(steps), _DEMO_BATCH, _CHUNK_BUDGET)
    if need > DEFAULT_MAX_MEMORY:
        raise InputError(f"T={max(steps)} needs about {need / 2**30:.1f} GiB to evaluate the "
                         f"demo (more than {DEFAULT_MAX_MEMORY / 2**30:g} GiB); use fewer "
                         "timesteps, or snnc eval with --max-memory")
    text = ",".join(map(str, steps))
    if out is None:
        demo.run_demo(None, text, progress=not quiet, echo=_echo)
        return
    _run_demo_into(Path(out), text, force, quiet)


def _run_demo_into(folder: Path, timesteps: str, force: bool, quiet: bool) -> None:
    """Runs the demo in a staging folder inside ``folder``, then moves its files in.

    The existing demo.snn and results.json stay as they were until the run has succeeded,
    and an interrupted run leaves ``folder`` as it found it. (run_demo writes each file
    atomically, but minutes apart: without the staging folder an interruption in between
    would leave a new demo.snn next to the old results.json.)
    """
    from snncompiler import demo

    names = ("demo.snn", "results.json")
    for name in names:
        if os.path.lexists(folder / name) and not force:
            raise InputError(f"{folder / name} exists; pass --force to overwrite demo.snn and "
                             "results.json")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".snnc-demo-", dir=folder))
    try:
        def echo(line):
            _echo(str(line).replace(str(staging), str(folder)))

        demo.run_demo(str(staging), timesteps, progress=not quiet, echo=echo)
        for name in names:
            os.replace(staging / name, folder / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- export


@main.command("export")
@click.argument("snn", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The .onnx file to write.")
@click.option("--timesteps-for", type=click.IntRange(1), default=None,
              help="Use the neuron parameters calibrated for the T nearest to this one "
                   "(default: the .snn file's default T).")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@_friendly_errors
def export_command(snn, output, timesteps_for, force):
    """Write one timestep of SNN (a .snn file) as a plain ONNX graph (opset 17).

    \b
    Inputs: the network's input, t (int64, 1 at the first step), state_in_* (zeros at t=1).
    Outputs: readout (the running mean of the output so far), state_out_* (the next
    step's state_in_*). See docs/export.md.
    """
    from snncompiler.export_onnx import OPSET, STATE_IN, calibrated_for, export_step
    from snncompiler.runtime.files import open_atomically
    from snncompiler.runtime.format import load_program

    if not Path(snn).is_file():
        raise InputError(f"{snn}: no such .snn file")
    _check_output(output, force, snn_file=snn)
    program = load_program(snn)
    model = export_step(program, timesteps_for=timesteps_for)
    data = model.SerializeToString()
    with open_atomically(output, "wb") as stream:
        stream.write(data)
    states = sum(value.name.startswith(STATE_IN) for value in model.graph.input)
    _echo(f"wrote {output}: one step of {snn} as ONNX (opset {OPSET}, {len(model.graph.node)} "
          f"nodes, {len(data) / 2**20:.1f} MiB), {states} state tensors, neuron parameters "
          f"for T={calibrated_for(program, timesteps_for)}")


# --------------------------------------------------------------------------- report


@main.command("report")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The .html file to write.")
@click.option("--snn", type=click.Path(dir_okay=False),
              help="The .snn file that was evaluated: adds the model and its calibration "
                   "summary (from its header).")
@click.option("--title", help="The page's title (default: from the model's name).")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@_friendly_errors
def report_command(results, output, snn, title, force):
    """One self-contained HTML page (tables, SVG plots) from RESULTS (snnc eval --json)."""
    from snncompiler import report
    from snncompiler.runtime.format import load_program

    for path, what in ((results, "results"), (snn, ".snn")):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{path}: no such {what} file")
    _check_output(output, force, results_file=results, snn_file=snn)
    program = load_program(snn) if snn else None
    report.write_report(results, output, program=program,
                        snn_name=Path(snn).name if snn else None, title=title)
    _echo(f"wrote {output}: the report on {results}")


if __name__ == "__main__":  # pragma: no cover
    main()
