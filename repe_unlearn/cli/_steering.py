"""``--steer FILE[:COEFF]``, ``--steer-positions`` and ``--ablate FILE``: the Python interventions, from the CLI.

Shared by ``eval``, ``diagnose`` and every ``attack``: the vector files are read (format, finite coefficient)
before the model is loaded, their width and layers checked against it once loaded, and the interventions are
entered around everything the command does with ``--model``, exactly as ``with vector.apply(model, coeff):`` /
``with vector.ablate(model):`` would in Python.
"""

import argparse
import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def split_spec(spec: str) -> tuple[str, float | None]:
    """``FILE[:COEFF]`` -> (file, coeff or None); a path that itself holds a colon is kept whole."""
    path, sep, tail = spec.rpartition(":")
    if sep and path:
        try:
            return path, float(tail)
        except ValueError:
            pass
    return spec, None


def read_vector(path: str, *, topic: int = 0, layer: int | None = None) -> Any:
    """Any vector file: this package's (a saved ControlVector, RMU's control vectors) or a GGUF control vector."""
    from .._vectors import ControlVector

    if not Path(path).is_file():
        raise ConfigError(f"{path} is not a file")
    if Path(path).suffix.lower() == ".gguf":
        from ..interop import from_gguf

        return from_gguf(path)
    return ControlVector.load(path, topic=topic, layer=layer)


def add_intervention_flags(parser: argparse.ArgumentParser) -> None:
    """The three flags, in their own help group."""
    group = parser.add_argument_group(
        "interventions on --model (entered for the whole command, as vector.apply / vector.ablate in Python)"
    )
    group.add_argument(
        "--steer",
        action="append",
        metavar="FILE[:COEFF]",
        help="add a vector file's directions times COEFF (default: the coefficient the file records, such as RMU's "
        "c, else 1); any file `vector` or the package writes; repeatable (the steerings add up)",
    )
    group.add_argument(
        "--steer-positions",
        choices=["all", "non-pad", "last"],
        default="all",
        help="where --steer adds: every position, real tokens only, or each row's last real token; in MCQ "
        "scoring, the question's last token, for every choice alike (default: all)",
    )
    group.add_argument(
        "--ablate",
        action="append",
        metavar="FILE",
        help="project a vector file's directions out of the residual stream at its layers; repeatable",
    )


def read_interventions(args: argparse.Namespace) -> list[tuple[str, Any, float | None]]:
    """Every ``--steer`` and ``--ablate`` vector, read and checked before any model is loaded:
    ``("steer", vector, coeff)`` and ``("ablate", vector, None)``."""
    import math

    read: list[tuple[str, Any, float | None]] = []
    for spec in getattr(args, "steer", None) or []:
        path, coeff = split_spec(spec)
        head, sep, tail = spec.rpartition(":")
        if not Path(path).is_file() and sep and Path(head).is_file():
            raise ConfigError(f"--steer {spec}: {tail!r} is not a number (FILE:COEFF)")
        if not Path(path).is_file():
            raise ConfigError(f"--steer {spec}: {path} is not a file")
        vector = read_vector(path)
        if coeff is None:
            coeff = float(vector.metadata.get("coefficient", 1.0))
        if not math.isfinite(coeff):
            raise ConfigError(f"--steer {spec}: the coefficient must be a finite number")
        vector.metadata.setdefault("file", path)
        read.append(("steer", vector, coeff))
    for path in getattr(args, "ablate", None) or []:
        if not Path(path).is_file():
            raise ConfigError(f"--ablate {path}: not a file")
        ablated = read_vector(path)
        ablated.metadata.setdefault("file", path)
        read.append(("ablate", ablated, None))
    return read


@contextlib.contextmanager
def applied(model: Any, read: list[tuple[str, Any, float | None]], positions: str = "all") -> Iterator[None]:
    """Enter every intervention of :func:`read_interventions` on ``model`` (nothing when there are none)."""
    from .._models import d_model
    from ..errors import ShapeError

    width = d_model(model)
    with contextlib.ExitStack() as stack:
        for how, vector, coeff in read:
            if vector.d_model != width:
                raise ShapeError(f"a --{how} vector has d_model {vector.d_model}; the model's is {width}")
            if how == "steer":
                stack.enter_context(vector.apply(model, coeff, positions=positions))
            else:
                stack.enter_context(vector.ablate(model))
        yield


def describe(read: list[tuple[str, Any, float | None]], positions: str = "all") -> list[str]:
    """One line per intervention, for the command's output and its JSON: the file, layers (negative ones
    count from the model's last layer), coefficient, hook point and, for steering, the positions."""
    lines = []
    for how, vector, coeff in read:
        layers = ",".join(str(i) for i in vector.layers)
        line = f"{how} {vector.metadata.get('file', '')} layers {layers}"
        line += (f" x {coeff:g}" if coeff is not None else "") + f" at {vector.point}"
        lines.append(line + (f", positions {positions}" if how == "steer" else ""))
    return lines


def with_interventions(cmd: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: its ``--steer``/``--ablate`` files are read first, and :func:`load_target_model` enters
    them on the model it loads until the command returns (also when it fails)."""

    @functools.wraps(cmd)
    def run(args: argparse.Namespace) -> int:
        read = read_interventions(args)
        for line in describe(read, getattr(args, "steer_positions", "all")):
            print(f"intervention: {line}", file=sys.stderr)
        with contextlib.ExitStack() as stack:
            args.interventions_ = (read, stack)
            return cmd(args)

    return run


def load_target_model(args: argparse.Namespace) -> Any:
    """Load ``--model`` (as ``load_model``) with the command's interventions entered on it."""
    from ._common import load_model

    model = load_model(args.model, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code)
    read, stack = getattr(args, "interventions_", ([], None))
    if read and stack is not None:
        stack.enter_context(applied(model, read, args.steer_positions))
    return model


def recorded(args: argparse.Namespace) -> list[str]:
    """The interventions a command ran under, for its JSON (empty when none)."""
    read, _ = getattr(args, "interventions_", ([], None))
    return describe(read, getattr(args, "steer_positions", "all"))


__all__ = [
    "add_intervention_flags",
    "applied",
    "describe",
    "load_target_model",
    "read_interventions",
    "recorded",
    "split_spec",
    "with_interventions",
]
