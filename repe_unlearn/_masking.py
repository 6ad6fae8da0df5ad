"""Masked reductions over positions: the one home of "which positions are real" and of averages over them.

An attention mask is ``[batch seq]``; activations cover the last ``pos`` of those positions (all of them
outside cached generation). Every function takes activations of any leading ``*layer`` dims, so a caller
can reduce one layer or a whole ``cache.stack()`` at once; ``mask=None`` means every position is real.
"""

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from ._typing import AttentionMask
from .errors import ConfigError

Acts = Float[Tensor, "*layer batch pos d_model"]
PerToken = Float[Tensor, "*layer batch pos"]
PerExample = Float[Tensor, "*layer batch"]


def aligned(mask: AttentionMask, n_pos: int) -> Tensor:
    """The part of ``mask`` that covers the last ``n_pos`` positions (all of it outside cached generation)."""
    return mask[:, -n_pos:]


def real_positions(mask: AttentionMask | None, acts: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[batch pos]`` weights (1 real, 0 pad) aligned with ``acts`` ``[*layer batch pos ...]``, on its device."""
    batch, n_pos = acts.shape[-3], acts.shape[-2]
    if mask is None:
        return torch.ones(batch, n_pos, dtype=dtype, device=acts.device)
    return aligned(mask, n_pos).to(device=acts.device, dtype=dtype)


def mean_over_positions(values: PerToken, mask: AttentionMask | None = None) -> PerExample:
    """Each example's mean of a per-token value over its real positions."""
    keep = real_positions(mask, values[..., None], values.dtype)
    return (values * keep).sum(dim=-1) / keep.sum(dim=-1).clamp(min=1)


def masked_mean(acts: Acts, mask: AttentionMask | None = None) -> Float[Tensor, "*layer batch d_model"]:
    """Each example's activation averaged over its real (non-pad) positions."""
    keep = real_positions(mask, acts, acts.dtype)
    total = einops.einsum(acts, keep, "... batch pos d_model, batch pos -> ... batch d_model")
    return total / keep.sum(dim=-1)[:, None].clamp(min=1)


def token_norms(acts: Acts, mask: AttentionMask | None = None) -> PerExample:
    """Each example's mean L2 norm of the residual stream over its real tokens."""
    return mean_over_positions(acts.float().norm(dim=-1), mask)


def mean_token_norm(acts: Float[Tensor, "batch pos d_model"], mask: AttentionMask | None = None) -> Tensor:
    """The mean L2 norm over every real token of a batch (a scalar; long rows weigh more)."""
    norms = acts.detach().float().norm(dim=-1)
    keep = real_positions(mask, acts)
    return (norms * keep).sum() / keep.sum().clamp(min=1)


def last_token(acts: Float[Tensor, "batch pos d_model"], mask: AttentionMask | None = None) -> Tensor:
    """Activation at the last real position of each row (left or right padding alike)."""
    if mask is None:
        return acts[:, -1]
    keep = real_positions(mask, acts, torch.bool)
    if not bool(keep.any(dim=1).all()):
        raise ConfigError("an attention-mask row has no non-pad position; cannot take its last token")
    n_pos = acts.shape[1]
    last = n_pos - 1 - torch.flip(keep, dims=[1]).int().argmax(dim=1)
    return acts[torch.arange(acts.shape[0], device=acts.device), last]


__all__ = [
    "aligned",
    "last_token",
    "masked_mean",
    "mean_over_positions",
    "mean_token_norm",
    "real_positions",
    "token_norms",
]
