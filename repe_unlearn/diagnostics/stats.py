"""Per-example statistics of cached activations: per-token norms and cosine similarities, masked for padding.

Each function takes one layer's ``[batch pos d_model]`` activations (e.g. ``cache[layer]``) and the cache's
attention mask, and returns one number per example, so a caller can stream over batches and keep little.
"""

import torch
from jaxtyping import Float
from torch import Tensor

from .._typing import Activations, AttentionMask, Direction

PerExample = Float[Tensor, " batch"]


def _keep(acts: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return torch.ones(acts.shape[:2], dtype=torch.float32, device=acts.device)
    return mask[:, -acts.shape[1] :].to(device=acts.device, dtype=torch.float32)


def _masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    return (values * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)


def token_norms(acts: Activations, mask: AttentionMask | None = None) -> PerExample:
    """Mean L2 norm of the residual stream over each example's non-pad tokens."""
    return _masked_mean(acts.float().norm(dim=-1), _keep(acts, mask))


def cosine_to_direction(acts: Activations, direction: Direction, mask: AttentionMask | None = None) -> PerExample:
    """Mean cosine similarity between each non-pad token's activation and ``direction``."""
    unit = direction.float().to(acts.device) / direction.float().norm()
    cos = (acts.float() @ unit) / acts.float().norm(dim=-1).clamp(min=1e-12)
    return _masked_mean(cos, _keep(acts, mask))


def paired_cosine(acts: Activations, other: Activations, mask: AttentionMask | None = None) -> PerExample:
    """Mean cosine similarity, token by token, between two models' activations on the same inputs."""
    cos = torch.nn.functional.cosine_similarity(acts.float(), other.float(), dim=-1, eps=1e-12)
    return _masked_mean(cos, _keep(acts, mask))


def max_abs_difference(acts: Activations, other: Activations, mask: AttentionMask | None = None) -> float:
    """Largest absolute difference between two activations over non-pad positions (0.0: bit-identical)."""
    keep = _keep(acts, mask).bool()
    return float((acts.float() - other.float()).abs()[keep].max()) if bool(keep.any()) else 0.0
