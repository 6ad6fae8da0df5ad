"""Architecture adapter: where a model keeps its decoder layers, their residual writes and MLP projections.

Everything else in the package finds modules through this file, by name, never by parameter position (in
transformers 5 the 7th parameter of a decoder layer is ``down_proj`` only for Llama/Mistral/Gemma).
"""

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import nn

from .errors import ArchitectureError, HookPointError, LayerNotFoundError

ResidualPoint = Literal["resid_pre", "resid_post", "mlp_out", "attn_out"]
HeadPoint = Literal["attn_heads", "attn_pattern"]
HookPoint = Literal["resid_pre", "resid_post", "mlp_out", "attn_out", "attn_heads", "attn_pattern"]
# [batch pos d_model]: the residual stream and what each block writes to it (control vectors act here)
RESIDUAL_POINTS: tuple[ResidualPoint, ...] = ("resid_pre", "resid_post", "mlp_out", "attn_out")
# per head: attn_heads [batch pos head d_head] (the input of the attention output projection, before it mixes
# the heads), attn_pattern [batch head query key] (the attention weights, read-only; needs eager attention)
HEAD_POINTS: tuple[HeadPoint, ...] = ("attn_heads", "attn_pattern")
HOOK_POINTS: tuple[HookPoint, ...] = (*RESIDUAL_POINTS, *HEAD_POINTS)


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """Dotted paths to the parts of a decoder-only transformer.

    ``mlp_out`` and ``attn_out`` name the submodule whose output is what that block *adds to the residual
    stream*; that is the block itself for pre-norm models, but the post-norm for Gemma2/3 and the residual
    dropout for Phi3 and GPT-NeoX.
    """

    layers_path: str  # from the model root to the ModuleList of decoder layers
    mlp_out: str = "mlp"
    attn_out: str = "self_attn"
    mlp_down_proj: str = "mlp.down_proj"  # the MLP output projection, the module RMU updates
    attention: str = "self_attn"  # the attention module; returns (output, weights), weights only when eager
    attn_o_proj: str = "self_attn.o_proj"  # the attention output projection; its input holds the heads side by side

    def __post_init__(self) -> None:
        for name in ("layers_path", "mlp_out", "attn_out", "mlp_down_proj", "attention", "attn_o_proj"):
            value = getattr(self, name)
            if not value or any(not part.isidentifier() and not part.isdigit() for part in value.split(".")):
                raise ArchitectureError(f"Architecture.{name}={value!r} is not a dotted path like 'model.layers'")


_LLAMA_LIKE = Architecture(layers_path="model.layers")
_POST_NORM = Architecture(
    layers_path="model.layers", mlp_out="post_feedforward_layernorm", attn_out="post_attention_layernorm"
)
_BY_MODEL_TYPE: dict[str, Architecture] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _POST_NORM,
    "gemma3_text": _POST_NORM,
    "phi3": Architecture(layers_path="model.layers", mlp_out="resid_mlp_dropout", attn_out="resid_attn_dropout"),
    "gpt2": Architecture(
        layers_path="transformer.h",
        attn_out="attn",
        mlp_down_proj="mlp.c_proj",
        attention="attn",
        attn_o_proj="attn.c_proj",
    ),
    "gpt_neox": Architecture(
        layers_path="gpt_neox.layers",
        mlp_out="post_mlp_dropout",
        attn_out="post_attention_dropout",
        mlp_down_proj="mlp.dense_4h_to_h",
        attention="attention",
        attn_o_proj="attention.dense",
    ),
}
_BY_MODEL: "weakref.WeakKeyDictionary[nn.Module, Architecture]" = weakref.WeakKeyDictionary()


def supported_model_types() -> list[str]:
    """The ``config.model_type`` values with a known architecture (built in or registered)."""
    return sorted(_BY_MODEL_TYPE)


def register_architecture(target: str | nn.Module, architecture: Architecture) -> None:
    """Teach the package a new architecture: for every model of a ``model_type`` (str), or for one model."""
    if isinstance(target, str):
        _BY_MODEL_TYPE[target] = architecture
    else:
        _BY_MODEL[target] = architecture


def _model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", "") or "")


def _get(root: nn.Module, path: str) -> nn.Module | None:
    module: nn.Module | None = root
    for part in path.split("."):
        module = getattr(module, part, None)
        if not isinstance(module, nn.Module):
            return None
    return module


def _module_lists(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and name and len(m) > 0]


def architecture(model: nn.Module) -> Architecture:
    """The :class:`Architecture` of ``model``: registered for it, else for its ``config.model_type``."""
    if model in _BY_MODEL:
        return _BY_MODEL[model]
    model_type = _model_type(model)
    if model_type in _BY_MODEL_TYPE:
        return _BY_MODEL_TYPE[model_type]
    candidates = _module_lists(model)
    hint = f" (a ModuleList was found at {candidates[0]!r})" if candidates else ""
    raise ArchitectureError(
        f"unknown architecture {model_type or type(model).__name__!r}; "
        f"supported: {', '.join(supported_model_types())}. "
        f"Pass a template: repe_unlearn.register_architecture(model, "
        f"Architecture(layers_path='model.layers', mlp_down_proj='mlp.down_proj')){hint}"
    )


def find_layers_path(model: nn.Module, layers_path: str | None = None) -> str:
    """Dotted path from ``model`` to its ModuleList of decoder layers, as resolved on this very object.

    Works on a ``*ForCausalLM`` and on its bare base model (``model.model``) alike.
    """
    path = layers_path if layers_path is not None else architecture(model).layers_path
    parts = path.split(".")
    for start in range(len(parts)):  # the base model lacks the leading "model."/"transformer." prefix
        candidate = ".".join(parts[start:])
        if isinstance(_get(model, candidate), nn.ModuleList):
            return candidate
    raise ArchitectureError(
        f"no ModuleList of decoder layers at {path!r} in {type(model).__name__}; "
        f"ModuleLists found: {_module_lists(model)[:5]}. Pass layers_path= or register_architecture()"
    )


def decoder_layers(model: nn.Module, layers_path: str | None = None) -> list[nn.Module]:
    """The decoder layers of ``model``, in order; ``layers_path`` (e.g. ``"model.layers"``) overrides lookup."""
    return list(cast(nn.ModuleList, _get(model, find_layers_path(model, layers_path))))


def n_layers(model: nn.Module) -> int:
    """Number of decoder layers."""
    return len(decoder_layers(model))


def resolve_layer(model: nn.Module, layer: int) -> int:
    """Turn a possibly negative layer index into ``0 <= index < n_layers``, or raise LayerNotFoundError."""
    n = n_layers(model)
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise LayerNotFoundError(f"layer index must be an int, got {layer!r}")
    if not -n <= layer < n:
        raise LayerNotFoundError(f"layer {layer} is out of range: this model has {n} layers (valid: {-n}..{n - 1})")
    return layer % n


def resolve_layers(model: nn.Module, layers: int | Iterable[int] | None) -> list[int]:
    """Sorted unique non-negative indices; ``None`` means every layer. An empty selection is refused."""
    if layers is None:
        return list(range(n_layers(model)))
    if isinstance(layers, int):
        layers = [layers]
    if not isinstance(layers, Iterable) or isinstance(layers, (str, bytes)):
        raise LayerNotFoundError(f"layers must be an int, a list of ints or None, got {layers!r}")
    indices = sorted({resolve_layer(model, layer) for layer in layers})
    if not indices:
        raise LayerNotFoundError("no layer selected (an empty list); pass layer indices, or None for every layer")
    return indices


def entry_modules(model: nn.Module) -> list[nn.Module]:
    """Where a forward pass through the decoder layers can start: ``model`` and each module between it and
    the layer list (the ``*ForCausalLM`` and its base ``model.model``, ``transformer``, ...), outermost first."""
    parts = find_layers_path(model).split(".")
    found = [model]
    for depth in range(1, len(parts)):
        module = _get(model, ".".join(parts[:depth]))
        if module is not None and not isinstance(module, nn.ModuleList):
            found.append(module)
    return found


def input_device(model: nn.Module) -> torch.device:
    """The device of the input embedding: where token ids and masks must be for a forward pass to start."""
    get_emb = getattr(model, "get_input_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    weight = getattr(emb, "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight.device
    for param in model.parameters():
        return param.device
    raise ArchitectureError(f"{type(model).__name__} has no parameters; cannot tell its device")


def d_model(model: nn.Module) -> int:
    """Width of the residual stream."""
    config = getattr(model, "config", None)
    if config is not None:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        for key in ("hidden_size", "n_embd", "d_model"):
            value = getattr(text, key, None)
            if isinstance(value, int):
                return value
    get_emb = getattr(model, "get_input_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    if isinstance(emb, nn.Embedding):
        return emb.embedding_dim
    raise ArchitectureError(f"cannot tell d_model of {type(model).__name__}: no config.hidden_size, no input embedding")


def n_heads(model: nn.Module) -> int:
    """Number of attention (query) heads per layer, from the config."""
    config = getattr(model, "config", None)
    if config is not None:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        for key in ("num_attention_heads", "n_head", "num_heads"):
            value = getattr(text, key, None)
            if isinstance(value, int) and value > 0:
                return value
    raise ArchitectureError(
        f"cannot tell the number of attention heads of {type(model).__name__}: no config.num_attention_heads"
    )


def position_dim(point: str) -> int:
    """The dimension of a hook point's activation that indexes (query) positions."""
    return 2 if point == "attn_pattern" else 1


def _submodule(model: nn.Module, layer: int, path: str, what: str) -> nn.Module:
    block = decoder_layers(model)[resolve_layer(model, layer)]
    found = _get(block, path)
    if found is None:
        raise ArchitectureError(
            f"decoder layer {layer} of {type(model).__name__} has no submodule {path!r} ({what}); "
            f"its children are {[n for n, _ in block.named_children()]}. Register a corrected Architecture"
        )
    return found


def module_name(model: nn.Module, module: nn.Module) -> str:
    """The dotted name of ``module`` inside ``model`` (``"model.layers.3.mlp"``), for error messages."""
    for name, candidate in model.named_modules():
        if candidate is module:
            return name or type(module).__name__
    return type(module).__name__


def hook_module(model: nn.Module, layer: int, point: str) -> tuple[nn.Module, Literal["pre", "post"]]:
    """The module a hook point lives on, and whether it reads the module's input (pre) or output (post)."""
    if point not in HOOK_POINTS:
        raise HookPointError(f"unknown hook point {point!r}; valid: {', '.join(HOOK_POINTS)}")
    arch = architecture(model)
    if point in ("resid_pre", "resid_post"):
        block = decoder_layers(model)[resolve_layer(model, layer)]
        return block, "pre" if point == "resid_pre" else "post"
    if point == "mlp_out":
        return _submodule(model, layer, arch.mlp_out, "the MLP's write to the residual stream"), "post"
    if point == "attn_heads":
        return _submodule(model, layer, arch.attn_o_proj, "the attention output projection"), "pre"
    if point == "attn_pattern":
        return _submodule(model, layer, arch.attention, "the attention module"), "post"
    return _submodule(model, layer, arch.attn_out, "the attention's write to the residual stream"), "post"


_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_norm")  # the names transformers uses


def final_norm(model: nn.Module) -> nn.Module:
    """The norm applied after the last decoder layer, before the unembedding (``model.norm``, ``ln_f``,
    ``final_layer_norm``), found beside the decoder layers."""
    path = find_layers_path(model)
    parent = _get(model, path.rpartition(".")[0]) if "." in path else model
    for name in _FINAL_NORMS:
        found = getattr(parent, name, None)
        if isinstance(found, nn.Module):
            return found
    raise ArchitectureError(
        f"no final norm ({', '.join(_FINAL_NORMS)}) beside the decoder layers of {type(model).__name__}; "
        f"its children are {[n for n, _ in (parent or model).named_children()]}"
    )


def mlp_down_proj(model: nn.Module, layer: int) -> nn.Module:
    """The MLP output projection of ``layer`` (``mlp.down_proj``, ``mlp.c_proj``, ``mlp.dense_4h_to_h`` ...)."""
    return _submodule(model, layer, architecture(model).mlp_down_proj, "the MLP output projection")


def parameter_name(model: nn.Module, module: nn.Module, param: str = "weight") -> str:
    """Fully qualified name of ``module.<param>`` inside ``model``, as in ``model.named_parameters()``."""
    for name, candidate in model.named_modules():
        if candidate is module:
            full = f"{name}.{param}" if name else param
            if full not in dict(model.named_parameters()):
                raise ArchitectureError(f"{name or type(module).__name__} has no parameter {param!r}")
            return full
    raise ArchitectureError(f"{type(module).__name__} is not a submodule of {type(model).__name__}")
