"""Vectors across tools: lm-evaluation-harness ``--model steered``, repeng / llama.cpp GGUF, steering-vectors.

Each conversion maps this package's :class:`~repe_unlearn.ControlVector` (a direction per decoder layer, added
at a hook point; layer ``i`` at ``resid_post`` is the output of ``model.model.layers[i]``) to another tool's
format, and back where the other format can be read without unpickling. The other packages are optional
(``pip install "repe-unlearn[interop]"``) and imported only here, when a conversion needs them.

- **lm-eval steered**: a ``.pt`` dict ``{hookpoint: {"steering_vector", "steering_coefficient", "action"}}``
  whose hook points name the decoder layers relative to ``model.base_model`` (``layers.4``, GPT-2 ``h.4``);
  lm-eval adds ``coefficient * vector`` to the layer's output at every position: this package's
  ``resid_post`` with ``positions="all"``. The file is a pickle (lm-eval loads it with ``weights_only=False``):
  writing it is an explicit export; this package never loads one.
- **repeng / GGUF**: tensors ``direction.<layer>`` in a GGUF file of architecture ``controlvector`` with
  ``controlvector.model_hint`` and ``controlvector.layer_count``, written and read with the ``gguf`` package.
  The layer keys are repeng's: the index into the model's decoder layers, whose output ``ControlModel`` adds
  to (this package's ``resid_post`` at the same index).
- **steering-vectors**: ``SteeringVector(layer_activations={layer: tensor}, layer_type="decoder_block")``, which
  adds ``multiplier * tensor`` to the output of decoder block ``layer``: again ``resid_post``, same index.
"""

import os
from pathlib import Path
from typing import Any

import torch

from ._models import find_layers_path, resolve_layer
from ._vectors import ControlVector
from .errors import ConfigError, FormatError


def _require(module: str, extra: str = "interop") -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"this conversion needs the {module!r} package: pip install 'repe-unlearn[{extra}]'"
        ) from None


def _post_only(vector: ControlVector, tool: str) -> None:
    if vector.point != "resid_post":
        raise ConfigError(
            f"{tool} adds to a decoder layer's output (resid_post); this vector is at {vector.point!r}. "
            "Recompute it at resid_post, or shift it by hand (resid_pre at layer i is resid_post at layer i-1)"
        )


def lm_eval_hookpoint(model: torch.nn.Module, layer: int) -> str:
    """lm-eval's name for decoder layer ``layer``: its module path relative to ``model.base_model``."""
    path = find_layers_path(model)
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and path.startswith(prefix + "."):
        path = path[len(prefix) + 1 :]
    elif prefix and path == prefix:
        path = ""
    index = resolve_layer(model, layer)
    return f"{path}.{index}" if path else str(index)


def to_lm_eval_steered(
    vector: ControlVector, model: torch.nn.Module, path: str | os.PathLike[str], coeff: float = 1.0
) -> dict[str, dict[str, Any]]:
    """Write ``vector`` (times ``coeff``) as lm-eval's ``steer_path`` ``.pt`` file for ``model``'s architecture;
    ``lm_eval --model steered --model_args pretrained=DIR,steer_path=PATH`` then steers as
    ``vector.apply(model, coeff)`` does. Returns the dict written. (The file is a pickle: see the module doc.)"""
    _post_only(vector, "lm-eval's steered model")
    from ._models import d_model
    from .errors import ShapeError

    if vector.d_model != d_model(model):
        raise ShapeError(f"the vector has d_model {vector.d_model}; the model's is {d_model(model)}")
    config = {
        lm_eval_hookpoint(model, layer): {
            "steering_vector": direction.detach().float().cpu().reshape(1, -1).clone(),
            "steering_coefficient": float(coeff),
            "action": "add",
        }
        for layer, direction in vector.items()
    }
    target = Path(path)
    if target.suffix not in (".pt", ".pth"):
        raise ConfigError(f"lm-eval reads steering files ending in .pt or .pth, not {target.name!r}")
    torch.save(config, target)
    return config


def to_gguf(vector: ControlVector, path: str | os.PathLike[str], model_hint: str = "llama") -> None:
    """Write ``vector`` as a repeng/llama.cpp control-vector GGUF file (``direction.<layer>``, float32)."""
    gguf = _require("gguf")
    _post_only(vector, "repeng")
    if any(layer < 0 for layer in vector.layers):
        raise ConfigError(
            f"GGUF direction keys are layer indices from 0; resolve {vector.layers} against a model first"
        )
    writer = gguf.GGUFWriter(os.fspath(path), "controlvector")
    writer.add_string("controlvector.model_hint", model_hint)
    writer.add_uint32("controlvector.layer_count", len(vector))
    for layer, direction in vector.items():
        writer.add_tensor(f"direction.{layer}", direction.detach().float().cpu().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def from_gguf(path: str | os.PathLike[str]) -> ControlVector:
    """Read a repeng/llama.cpp control-vector GGUF file (read with the ``gguf`` package; no pickle)."""
    gguf = _require("gguf")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist or is not a file")
    try:
        reader = gguf.GGUFReader(os.fspath(path))
    except (ValueError, OSError) as exc:
        raise FormatError(f"{path} is not a GGUF file ({exc})") from None
    directions: dict[int, torch.Tensor] = {}
    for tensor in reader.tensors:
        name = tensor.name
        if not name.startswith("direction."):
            continue
        try:
            layer = int(name.split(".", 1)[1])
        except ValueError:
            raise FormatError(f"{path}: tensor {name!r} is not direction.<layer>") from None
        directions[layer] = torch.tensor(tensor.data.copy(), dtype=torch.float32).reshape(-1)
    if not directions:
        raise FormatError(f"{path} holds no direction.<layer> tensor: not a control vector")
    hint = reader.get_field("controlvector.model_hint")
    metadata: dict[str, Any] = {"source": "gguf", "file": os.fspath(path)}
    if hint is not None and len(hint.parts):
        metadata["model_hint"] = bytes(hint.parts[-1]).decode("utf-8", errors="replace")
    return ControlVector(directions, metadata=metadata)


def to_steering_vectors(vector: ControlVector) -> Any:
    """The same vector as a ``steering_vectors.SteeringVector`` (decoder-block outputs, same layer indices);
    ``sv.apply(model, multiplier=c)`` steers as ``vector.apply(model, c)``."""
    steering_vectors = _require("steering_vectors")
    _post_only(vector, "steering-vectors")
    activations = {layer: direction.detach().clone() for layer, direction in vector.items()}
    return steering_vectors.SteeringVector(layer_activations=activations, layer_type="decoder_block")


def from_steering_vectors(steering_vector: Any) -> ControlVector:
    """A ``steering_vectors.SteeringVector`` of decoder-block outputs as a :class:`ControlVector`."""
    layer_type = getattr(steering_vector, "layer_type", None)
    if layer_type != "decoder_block":
        raise ConfigError(f"only decoder_block steering vectors map to resid_post; this one is {layer_type!r}")
    directions = {int(k): torch.as_tensor(v).detach().float() for k, v in steering_vector.layer_activations.items()}
    return ControlVector(directions, metadata={"source": "steering-vectors"})


__all__ = [
    "from_gguf",
    "from_steering_vectors",
    "lm_eval_hookpoint",
    "to_gguf",
    "to_lm_eval_steered",
    "to_steering_vectors",
]
