"""``repe-unlearn inspect``: describe a model directory or a saved tensor file."""

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from ._common import load_model


def _inspect_model(path: str) -> dict[str, object]:
    from torch import nn

    from .._models import (
        HOOK_POINTS,
        architecture,
        d_model,
        find_layers_path,
        hook_module,
        mlp_down_proj,
        n_layers,
        parameter_name,
    )

    model = load_model(path)
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
    from .._cache import ActivationCache
    from .._io import read_safetensors
    from .._vectors import ControlVector

    tensors, header = read_safetensors(path)
    try:
        meta = json.loads(header.get("repe_unlearn", "{}"))
    except json.JSONDecodeError:
        meta = {}
    kind = meta.get("kind", "safetensors file (not written by repe_unlearn)")
    info: dict[str, object] = {"kind": kind}
    if kind == "control_vector":
        info["summary"] = repr(ControlVector.load(path))
    elif kind == "activation_cache":
        info["summary"] = repr(ActivationCache.load(path))
    info["tensors"] = {name: f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}" for name, t in tensors.items()}
    info["metadata"] = {k: v for k, v in meta.items() if k != "kind"}
    return info


def cmd_inspect(args: argparse.Namespace) -> int:
    """Describe a model directory (layers, hook points, MLP projections) or a saved vector/cache file."""
    path = Path(args.path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist; give a model directory or a .safetensors file")
    info = _inspect_model(str(path)) if path.is_dir() else _inspect_file(str(path))
    print(json.dumps(info, indent=2, default=str))
    return 0


def add_inspect_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``inspect``."""
    inspect = sub.add_parser("inspect", help=cmd_inspect.__doc__, description=cmd_inspect.__doc__)
    inspect.add_argument("path", help="a local HuggingFace model directory, or a vector/cache .safetensors file")
    inspect.set_defaults(func=cmd_inspect)
