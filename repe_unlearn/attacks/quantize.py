"""Quantization: round the unlearned model's weights to int8 or int4 and evaluate (does the knowledge return?).

Zhang et al. (2024) report that 4-bit quantization of unlearned models brings back much of what was forgotten:
an update small next to a weight's rounding step can vanish when the weight is rounded. This is weight-only,
symmetric round-to-nearest quantization, simulated in the model's own dtype (each weight replaced by its
dequantized value): per output channel (one scale per row), or group-wise (one scale per ``group`` consecutive
input columns of a row; 128, or the largest divisor of the row's width below it). Every linear layer of the
decoder layers is quantized (the embeddings and the LM head stay, as in the usual weight-only schemes).
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from .._models import decoder_layers
from ..errors import ConfigError
from .result import AttackResult, CurvePoint

Scheme = Literal["per-channel", "group"]
Evaluate = Callable[[], dict[str, float]]


def group_size(width: int, wanted: int = 128) -> int:
    """``wanted``, or the largest divisor of ``width`` below it (a row is split into equal groups)."""
    if wanted < 1:
        raise ConfigError(f"the quantization group must be at least 1, got {wanted}")
    return next(g for g in range(min(wanted, width), 0, -1) if width % g == 0)


def quantize_weight(weight: Tensor, bits: int, scheme: Scheme = "per-channel", group: int = 128) -> Tensor:
    """``weight`` ``[out in]`` rounded to signed ``bits``-bit integers times a scale, symmetric round-to-nearest:
    scale = max |w| / (2^(bits-1) - 1) over each row (``per-channel``) or each group of a row (``group``),
    ``q = clamp(round(w / scale), -(2^(bits-1) - 1), 2^(bits-1) - 1)``; returns ``q · scale`` in the weight's dtype."""
    if bits not in (2, 3, 4, 8):
        raise ConfigError(f"bits must be 8, 4, 3 or 2, got {bits}")
    if scheme not in ("per-channel", "group"):
        raise ConfigError(f"unknown quantization scheme {scheme!r}; valid: per-channel, group")
    w = weight.detach().float()
    rows, width = w.shape
    size = width if scheme == "per-channel" else group_size(width, group)
    blocks = w.reshape(rows, width // size, size)
    top = 2 ** (bits - 1) - 1
    scale = blocks.abs().amax(dim=-1, keepdim=True) / top
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # an all-zero block stays zero
    q = torch.clamp(torch.round(blocks / scale), -top, top)
    return (q * scale).reshape(rows, width).to(weight.dtype)


def _linear_weights(model: nn.Module) -> list[tuple[Tensor, bool]]:
    """The weight of every linear layer inside the decoder layers, and whether it is stored ``[in out]``."""
    found = []
    for layer in decoder_layers(model):
        for module in layer.modules():
            if isinstance(module, nn.Linear):
                found.append((module.weight, False))
            elif isinstance(module, Conv1D):  # GPT-2 stores [in out]
                found.append((module.weight, True))
    return found


@contextmanager
def quantized(model: nn.Module, bits: int, scheme: Scheme = "per-channel", group: int = 128) -> Iterator[int]:
    """Inside the block, every decoder linear weight of ``model`` is quantized; afterwards each is restored bit
    for bit. Yields the number of tensors quantized."""
    weights = _linear_weights(model)
    if not weights:
        raise ConfigError(f"{type(model).__name__} has no linear layers in its decoder layers to quantize")
    originals = [w.detach().clone() for w, _ in weights]
    try:
        with torch.no_grad():
            for (w, transposed), original in zip(weights, originals, strict=True):
                rows = original.T if transposed else original
                q = quantize_weight(rows, bits, scheme, group)
                w.copy_(q.T if transposed else q)
        yield len(weights)
    finally:
        with torch.no_grad():
            for (w, _), original in zip(weights, originals, strict=True):
                w.copy_(original)


def quantize(
    model: nn.Module,
    *,
    evaluate: Evaluate,
    settings: tuple[tuple[int, Scheme], ...] = ((8, "per-channel"), (4, "per-channel"), (4, "group")),
    group: int = 128,
) -> list[AttackResult]:
    """Evaluate ``model`` as it is and quantized with each ``(bits, scheme)`` of ``settings``; the model is
    unchanged afterwards. One :class:`AttackResult` per setting, named like ``quantize-int4-group``."""
    before = evaluate()
    results = []
    for bits, scheme in settings:
        start = time.perf_counter()
        with quantized(model, bits, scheme, group) as count:
            after = evaluate()
        details: dict[str, object] = {
            "bits": bits,
            "scheme": scheme,
            "tensors": count,
            "seconds": time.perf_counter() - start,
        }
        if scheme == "group":  # the group asked for, and those used (a row splits into equal groups)
            details["group"] = group
            widths = {(w.T if transposed else w).shape[-1] for w, transposed in _linear_weights(model)}
            details["groups_used"] = sorted({group_size(width, group) for width in widths})
        name = f"quantize-int{bits}-{scheme}"
        results.append(AttackResult(name, before, after, [CurvePoint(0, before), CurvePoint(1, after)], details))
    return results


__all__ = ["group_size", "quantize", "quantize_weight", "quantized"]
