"""Per-example statistics of cached activations: per-token norms and cosine similarities, masked for padding.

Each function takes ``[batch pos d_model]`` activations — or all layers at once, ``[layer batch pos d_model]``
(``cache.stack()``) — and the cache's attention mask, and returns one number per example (per layer), so a
caller can stream over batches and keep little.
"""

import torch
from jaxtyping import Float
from torch import Tensor

from .._masking import Acts, PerExample, mean_over_positions, real_positions
from .._typing import AttentionMask, Direction


def cosine_to_direction(acts: Acts, direction: Direction, mask: AttentionMask | None = None) -> PerExample:
    """Mean cosine similarity between each non-pad token's activation and ``direction``."""
    unit = direction.float().to(acts.device) / direction.float().norm()
    cos = (acts.float() @ unit) / acts.float().norm(dim=-1).clamp(min=1e-12)
    return mean_over_positions(cos, mask)


def paired_cosine(acts: Acts, other: Acts, mask: AttentionMask | None = None) -> PerExample:
    """Mean cosine similarity, token by token, between two models' activations on the same inputs."""
    cos = torch.nn.functional.cosine_similarity(acts.float(), other.float(), dim=-1, eps=1e-12)
    return mean_over_positions(cos, mask)


def max_abs_difference(acts: Acts, other: Acts, mask: AttentionMask | None = None) -> Float[Tensor, "*layer"]:
    """Largest absolute difference between two activations over non-pad positions (0.0: bit-identical)."""
    largest = (acts.float() - other.float()).abs().amax(dim=-1) * real_positions(mask, acts)
    return largest.amax(dim=(-2, -1))
