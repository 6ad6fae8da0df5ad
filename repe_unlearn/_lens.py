"""The logit lens: read a residual stream through the model's final norm and unembedding.

``logit_lens(model, cache[layer])`` gives the logits the model would produce if the residual stream stopped at
that layer: ``unembed(final_norm(h))`` (with Gemma2's final logit soft-capping). On the last layer's
``resid_post`` it equals the model's own logits.
"""

import torch
from torch import Tensor, nn

from ._models import final_norm
from .errors import ArchitectureError, ShapeError


def logit_lens(model: nn.Module, residual: Tensor) -> Tensor:
    """Logits ``[batch pos vocab]`` (or ``[... vocab]``) of a residual ``[batch pos d_model]``.

    Args:
        model: the causal LM the residual came from (its final norm and unembedding are used, on their device).
        residual: a cached residual stream, e.g. ``cache[layer]`` of a ``resid_post`` or ``resid_pre`` cache.

    Returns:
        The logits, in float32 for a readable comparison across layers.
    """
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Module):
        raise ArchitectureError(f"{type(model).__name__} has no output embedding (is it a *ForCausalLM?)")
    weight = getattr(head, "weight", None)
    if isinstance(weight, Tensor) and residual.shape[-1] != weight.shape[-1]:
        raise ShapeError(f"the residual has size {residual.shape[-1]}; the model's d_model is {weight.shape[-1]}")
    norm = final_norm(model)
    device = weight.device if isinstance(weight, Tensor) else residual.device
    dtype = weight.dtype if isinstance(weight, Tensor) else residual.dtype
    with torch.no_grad():
        logits = head(norm(residual.to(device=device, dtype=dtype)))
        cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
    return logits.float()


__all__ = ["logit_lens"]
