"""The ``snnc`` command line.

    snnc MODEL.onnx -o OUT.snn --calib CALIB.npz [-T 32] [--calib-samples N]
    snnc eval OUT.snn --data TEST.npz -T 1,2,4,8,16,32 [--onnx MODEL.onnx] [--json FILE]
    snnc inspect FILE
    snnc demo

Every error the user can cause ends in a one-line message on stderr and exit code 1.
"""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path

import click

from snncompiler import __version__
from snncompiler.errors import SnnError

EXIT_ERROR = 1


class _DefaultToCompile(click.Group):
    """A group whose first argument, when it is not a command, is a model to compile."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["compile", *args]
        return super().parse_args(ctx, args)


def _friendly_errors(command):
    """Turns expected failures into one line on stderr and a non-zero exit."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SnnError as error:
            _fail(str(error))
        except OSError as error:
            _fail(f"{error.filename or ''}: {error.strerror or error}".lstrip(": "))
        except KeyboardInterrupt:
            _fail("interrupted", code=130)

    return wrapper


def _fail(message: str, code: int = EXIT_ERROR):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _preprocessing_options(command):
    for option in reversed([
        click.option("--scale", type=float, help="Multiply inputs by this (e.g. 1/255)."),
        click.option("--mean", type=float, help="Then subtract this."),
        click.option("--std", type=float, help="Then divide by this."),
    ]):
        command = option(command)
    return command


def _config_options(command):
    choices_neg = click.Choice(["zero", "minus_theta", "off"])
    for option in reversed([
        click.option("-T", "--timesteps", default="32", show_default=True,
                     help="Target T, or a comma list: one DNI parameter set per value."),
        click.option("--theta-neg", type=choices_neg, default="zero", show_default=True,
                     help="SNM negative threshold: 0, -theta, or off (plain IF neuron)."),
        click.option("--initial-potential", type=click.Choice(["dni", "half", "zero"]),
                     default="dni", show_default=True,
                     help="Initial membrane potential: DNI search, theta/2 or 0."),
        click.option("--granularity", type=click.Choice(["channel", "layer"]),
                     default="channel", show_default=True, help="Thresholds per channel or layer."),
        click.option("--max-spikes", type=click.IntRange(1, 64), default=1, show_default=True,
                     help="Most spikes per neuron and step (1 = the paper's neuron)."),
    ]):
        command = option(command)
    return command


@click.group(cls=_DefaultToCompile, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="snnc")
def main():
    """Convert ONNX ANNs to spiking networks (DNISNM) and run them.

    \b
    snnc MODEL.onnx -o OUT.snn --calib CALIB.npz [-T 32]
    snnc eval OUT.snn --data TEST.npz -T 1,2,4,8,16,32 [--onnx MODEL.onnx]
    snnc inspect FILE
    snnc demo
    """


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
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@_friendly_errors
def compile_command(model, output, calib, calib_samples, timesteps, theta_neg,
                    initial_potential, granularity, max_spikes, scale, mean, std, force, quiet):
    """Compile MODEL (ONNX) to a .snn spiking network."""
    from snncompiler.context import CompileConfig
    from snncompiler.evaluate import parse_timesteps
    from snncompiler.npz import Preprocessing, load_npz
    from snncompiler.pipeline import compile_model
    from snncompiler.runtime.format import save_program

    if Path(output).exists() and not force:
        _fail(f"{output} exists; pass --force to overwrite it")
    config = CompileConfig(
        timesteps=tuple(_ordered_timesteps(timesteps, parse_timesteps)),
        theta_neg=theta_neg, initial_potential=initial_potential, granularity=granularity,
        max_spikes_per_step=max_spikes, progress=not quiet)
    calibration = load_npz(calib, Preprocessing(scale, mean, std), limit=calib_samples)
    result = compile_model(model, calibration, config)
    save_program(result.program, output, overwrite=force)
    _print_compile_summary(result, output, quiet)


def _ordered_timesteps(text, parse):
    # The first T given is the program's default; keep the user's order, drop repeats.
    values = parse(text)
    first = [int(p) for p in str(text).split(",") if p.strip()][0]
    return [first] + [t for t in values if t != first]


def _print_compile_summary(result, output, quiet):
    program = result.program
    neurons = program.neuron_nodes()
    channels = sum(n.arrays["theta"].shape[1] for n in neurons)
    click.echo(f"wrote {output}: {len(program.nodes)} nodes, {len(neurons)} neuron layers "
               f"({channels} channels), calibrated for T={program.timesteps} on "
               f"{program.calibration.get('samples')} samples in {result.seconds:.1f} s")
    if not quiet:
        passes = ", ".join(f"{name} {count}" for name, count in result.pass_counts.items())
        click.echo(f"passes: {passes}")
        for line in result.report:
            click.echo(f"  {line}")


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
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=None, help="Use the first N samples.")
@_preprocessing_options
@click.option("--force", is_flag=True, help="Overwrite the --json file if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@_friendly_errors
def eval_command(snn, data, timesteps, onnx_path, json_path, batch_size, limit, scale, mean,
                 std, force, quiet):
    """Accuracy of SNN (a .snn file) for every T, next to the ANN's."""
    from snncompiler import runtime
    from snncompiler.evaluate import evaluate, format_table, parse_timesteps
    from snncompiler.npz import Preprocessing, load_npz

    steps = parse_timesteps(timesteps)
    if json_path and Path(json_path).exists() and not force:
        _fail(f"{json_path} exists; pass --force to overwrite it")
    net = runtime.load(snn)
    dataset = load_npz(data, Preprocessing(scale, mean, std), limit=limit)
    ann = _ann_function(onnx_path) if onnx_path else None
    result = evaluate(net, dataset, steps, ann=ann, batch_size=batch_size, progress=not quiet)
    click.echo(format_table(result))
    if json_path:
        _write_text_atomically(json_path, json.dumps(result.to_json(), indent=2) + "\n")


def _ann_function(onnx_path):
    from snncompiler import frontend

    session = frontend.ort_session(frontend.load_model(onnx_path))
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _write_text_atomically(path, text):
    import os
    import tempfile

    folder = Path(path).resolve().parent
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".snnc-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@main.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False))
@_friendly_errors
def inspect_command(file):
    """Show how an ONNX model converts, or a .snn file's header."""
    from snncompiler.inspect import inspect_onnx, inspect_snn

    text = inspect_snn(file) if _is_zip(file) else inspect_onnx(file)
    click.echo(text)


def _is_zip(path) -> bool:
    with open(path, "rb") as stream:
        return stream.read(4) == b"PK\x03\x04"


@main.command("demo")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder to keep demo.snn and results.json in (default: a temporary one).")
@click.option("-T", "--timesteps", default="1,2,4,8,16,32", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@_friendly_errors
def demo_command(out, timesteps, quiet):
    """Convert and evaluate the shipped Fashion-MNIST CNN, offline."""
    from snncompiler.demo import run_demo

    run_demo(out, timesteps, progress=not quiet, echo=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
