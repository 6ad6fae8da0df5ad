"""Per-example statistics of cached activations: per-token norms and cosine similarities, masked for padding.

Each function takes ``[batch pos d_model]`` activations — or all layers at once, ``[layer batch pos d_model]``
(``cache.stack()``) — and the cache's attention mask, and returns one number per example (per layer), so a
caller can stream over batches and keep little.
"""

import torch
from jaxtyping import Float
from torch import Tensor

from .._typing import AttentionMask, Direction

Acts = Float[Tensor, "*layer batch pos d_model"]
PerExample = Float[Tensor, "*layer batch"]


def _keep(acts: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return torch.ones(acts.shape[-3:-1], dtype=torch.float32, device=acts.device)
    return mask[:, -acts.shape[-2] :].to(device=acts.device, dtype=torch.float32)


def _masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    return (values * keep).sum(dim=-1) / keep.sum(dim=-1).clamp(min=1)


def token_norms(acts: Acts, mask: AttentionMask | None = None) -> PerExample:
    """Mean L2 norm of the residual stream over each example's non-pad tokens."""
    return _masked_mean(acts.float().norm(dim=-1), _keep(acts, mask))


def mean_vectors(acts: Acts, mask: AttentionMask | None = None) -> Float[Tensor, "*layer batch d_model"]:
    """Each example's activation averaged over its non-pad tokens."""
    keep = _keep(acts, mask)
    return (acts * keep[..., None].to(acts.dtype)).sum(dim=-2) / keep.sum(dim=-1)[..., None].clamp(min=1)


def cosine_to_direction(acts: Acts, direction: Direction, mask: AttentionMask | None = None) -> PerExample:
    """Mean cosine similarity between each non-pad token's activation and ``direction``."""
    unit = direction.float().to(acts.device) / direction.float().norm()
    cos = (acts.float() @ unit) / acts.float().norm(dim=-1).clamp(min=1e-12)
    return _masked_mean(cos, _keep(acts, mask))


def paired_cosine(acts: Acts, other: Acts, mask: AttentionMask | None = None) -> PerExample:
    """Mean cosine similarity, token by token, between two models' activations on the same inputs."""
    cos = torch.nn.functional.cosine_similarity(acts.float(), other.float(), dim=-1, eps=1e-12)
    return _masked_mean(cos, _keep(acts, mask))


def max_abs_difference(acts: Acts, other: Acts, mask: AttentionMask | None = None) -> Float[Tensor, "*layer"]:
    """Largest absolute difference between two activations over non-pad positions (0.0: bit-identical)."""
    largest = (acts.float() - other.float()).abs().amax(dim=-1) * _keep(acts, mask)
    return largest.amax(dim=(-2, -1))
