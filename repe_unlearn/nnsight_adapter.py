"""nnsight interop: fill an ActivationCache and apply a ControlVector inside an nnsight trace.

Import this module only when you use nnsight: ``import nnsight`` patches objects globally, so the core
package never imports it. Hook points are found through the same architecture adapter as the hook path,
so ``trace_cache`` and :func:`repe_unlearn.record` read the same tensors.

nnsight runs the code of a trace in the model's execution order; the helpers here therefore visit hook
points layer by layer, steering a point before saving it (as if ``ControlVector.apply`` had been entered
before ``record``).
"""

from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from torch import Tensor, nn

from ._cache import ActivationCache
from ._hooks import _unpack
from ._models import (
    HEAD_POINTS,
    HookPoint,
    architecture,
    find_layers_path,
    n_heads,
    n_layers,
    resolve_layer,
    resolve_layers,
)
from ._vectors import ControlVector
from .errors import ConfigError, HookPointError

_STAGE = {"resid_pre": 0, "attn_pattern": 1, "attn_heads": 2, "attn_out": 3, "mlp_out": 4, "resid_post": 5}


def _nnsight() -> ModuleType:
    try:
        import nnsight
    except ImportError:
        raise ConfigError("nnsight is not installed; pip install 'nnsight>=0.8.1,<0.9'") from None
    return nnsight


def wrap(model: nn.Module, tokenizer: Any) -> Any:
    """``nnsight.TransformersModel(model, tokenizer=tokenizer)``; nnsight switches the tokenizer to left padding."""
    return _nnsight().TransformersModel(model, tokenizer=tokenizer)


def _torch_model(nn_model: Any) -> nn.Module:
    module = getattr(nn_model, "_module", None)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"expected an nnsight model (an Envoy), got {type(nn_model).__name__}")
    return module


def _envoy(nn_model: Any, layer: int, point: HookPoint) -> Any:
    model = _torch_model(nn_model)
    envoy = nn_model
    for part in find_layers_path(model).split("."):
        envoy = getattr(envoy, part)
    envoy = envoy[resolve_layer(model, layer)]
    arch = architecture(model)
    sub = {
        "mlp_out": arch.mlp_out,
        "attn_out": arch.attn_out,
        "attn_heads": arch.attn_o_proj,
        "attn_pattern": arch.attention,
    }.get(point)
    for part in sub.split(".") if sub else ():
        envoy = getattr(envoy, part)
    return envoy


def _read(envoy: Any, point: HookPoint, heads: int | None = None) -> Tensor:
    if point == "attn_heads":  # the input of the output projection, one slice per head
        return envoy.input.unflatten(-1, (heads, -1))
    if point == "attn_pattern":
        weights = envoy.output[1]
        if weights is None:
            raise HookPointError("no attention weights: load the model with attn_implementation='eager'")
        return weights
    value = envoy.input if point == "resid_pre" else envoy.output
    return _unpack(value, f"{point} (nnsight)")[0]


def _write(envoy: Any, point: HookPoint, new: Tensor) -> None:
    if point == "resid_pre":
        envoy.input = new
    else:
        envoy.output = _unpack(envoy.output, f"{point} (nnsight)")[1](new)


def steer(nn_model: Any, vector: ControlVector, coeff: float = 1.0, *, layers: Iterable[int] | None = None) -> None:
    """Inside a trace: add ``coeff * vector[layer]`` at the vector's hook point of each layer."""
    model = _torch_model(nn_model)
    chosen = vector.layers if layers is None else list(layers)
    for layer in sorted(chosen, key=lambda i: resolve_layer(model, i)):
        _steer_one(nn_model, vector, layer, coeff)


def _steer_one(nn_model: Any, vector: ControlVector, layer: int, coeff: float) -> None:
    envoy = _envoy(nn_model, layer, vector.point)
    act = _read(envoy, vector.point)
    _write(envoy, vector.point, act + coeff * vector[layer].to(device=act.device, dtype=act.dtype))


def save_activations(
    nn_model: Any, layers: int | Iterable[int] | None = None, point: HookPoint = "resid_post"
) -> dict[int, Tensor]:
    """Inside a trace: ``{layer: saved activation}`` for each layer (pass the result to :func:`to_cache`)."""
    nnsight = _nnsight()
    model = _torch_model(nn_model)
    heads = n_heads(model) if point in HEAD_POINTS else None
    saved = {
        layer: nnsight.save(_read(_envoy(nn_model, layer, point), point, heads))
        for layer in resolve_layers(model, layers)
    }
    return nnsight.save(saved)  # the dict itself must be saved, or nnsight drops it when the trace ends


def to_cache(
    saved: Mapping[int, Tensor],
    *,
    point: HookPoint = "resid_post",
    attention_mask: Tensor | None = None,
    model: nn.Module | None = None,
) -> ActivationCache:
    """An :class:`ActivationCache` (detached, on the CPU) from the values saved in a trace."""
    meta: dict[str, Any] = {}
    if model is not None:
        meta = {"model": type(model).__name__, "n_layers": n_layers(model)}
    acts = {layer: value.detach().cpu() for layer, value in saved.items()}
    mask = None if attention_mask is None else attention_mask.detach().cpu()
    return ActivationCache(acts, point=point, attention_mask=mask, metadata=meta)


def trace_cache(
    nn_model: Any,
    inputs: Any,
    layers: int | Iterable[int] | None = None,
    point: HookPoint = "resid_post",
    *,
    vector: ControlVector | None = None,
    coeff: float = 1.0,
) -> ActivationCache:
    """Run one nnsight trace on ``inputs``, optionally steering with ``vector``, and return the cache.

    ``inputs`` is anything ``nn_model.trace`` takes; pass a tokenized dict to keep its attention mask.
    """
    nnsight = _nnsight()
    model = _torch_model(nn_model)
    record_at = resolve_layers(model, layers)
    events = [(layer, _STAGE[point], 1, layer) for layer in record_at]
    if vector is not None:
        events += [(resolve_layer(model, k), _STAGE[vector.point], 0, k) for k in vector.layers]
    saved: dict[int, Tensor] = {}
    heads = n_heads(model) if point in HEAD_POINTS else None
    with nn_model.trace(inputs):
        for layer, _, is_save, key in sorted(events):
            if is_save:
                saved[layer] = nnsight.save(_read(_envoy(nn_model, layer, point), point, heads))
            elif vector is not None:
                _steer_one(nn_model, vector, key, coeff)
    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    return to_cache(saved, point=point, attention_mask=mask, model=model)
