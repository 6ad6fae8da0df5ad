"""Command line: argparse -> library calls. The only module that prints for humans or exits.

Errors of this package become one line on stderr and exit code 2; ``--debug`` shows the traceback.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import ConfigError, FormatError, RepeUnlearnError

EXIT_USAGE = 2


def _load_model(path: str) -> object:
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise ConfigError(
            f"{path} is not a HuggingFace model directory (no config.json); this tool never downloads models"
        )
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)


def _inspect_model(path: str) -> dict[str, object]:
    from torch import nn

    from .models import (
        HOOK_POINTS,
        architecture,
        d_model,
        find_layers_path,
        hook_module,
        mlp_down_proj,
        n_layers,
        parameter_name,
    )

    model = _load_model(path)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{path} did not load as a torch model")
    names = {id(m): name for name, m in model.named_modules()}
    hooks = {}
    for point in HOOK_POINTS:
        module, kind = hook_module(model, 0, point)
        hooks[point] = f"{kind}-hook on {names[id(module)]}"
    return {
        "model": type(model).__name__,
        "model_type": getattr(getattr(model, "config", None), "model_type", None),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "layers_path": find_layers_path(model),
        "n_layers": n_layers(model),
        "d_model": d_model(model),
        "hook_points_layer_0": hooks,
        "mlp_down_proj_layer_0": parameter_name(model, mlp_down_proj(model, 0)),
        "architecture": vars(architecture(model)),
    }


def _inspect_file(path: str) -> dict[str, object]:
    from .cache import ActivationCache
    from .vectors import ControlVector

    try:
        vector = ControlVector.load(path)
        return {"control_vector": repr(vector), "layers": vector.layers, "metadata": vector.metadata}
    except FormatError as not_vector:
        if "holds a 'activation_cache'" not in str(not_vector):
            raise
    cache = ActivationCache.load(path)
    return {"activation_cache": repr(cache), "layers": cache.layers, "metadata": cache.metadata}


def cmd_inspect(args: argparse.Namespace) -> int:
    """Describe a model directory (layers, hook points, MLP projections) or a saved vector/cache file."""
    path = Path(args.path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist; give a model directory or a .safetensors file")
    info = _inspect_model(str(path)) if path.is_dir() else _inspect_file(str(path))
    print(json.dumps(info, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``repe-unlearn`` argument parser (docs generate the CLI reference from it)."""
    parser = argparse.ArgumentParser(
        prog="repe-unlearn",
        description="Activation editing with hooks for HuggingFace causal LMs, and RMU unlearning built on it.",
    )
    parser.add_argument("--version", action="version", version=f"repe-unlearn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    inspect = sub.add_parser("inspect", help=cmd_inspect.__doc__, description=cmd_inspect.__doc__)
    inspect.add_argument("path", help="a local HuggingFace model directory, or a vector/cache .safetensors file")
    inspect.set_defaults(func=cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``repe-unlearn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        code: int = args.func(args)
        return code
    except (RepeUnlearnError, FileNotFoundError, FileExistsError) as exc:
        if args.debug:
            raise
        print(f"repe-unlearn: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def entry() -> None:
    """Console-script wrapper: exit with :func:`main`'s code."""
    sys.exit(main())
