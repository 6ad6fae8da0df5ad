"""Attention heads: choosing heads by index, and zero-ablating what chosen heads write.

A head's output is its slice of ``attn_heads`` ``[batch pos head d_head]``, the input of the attention output
projection; zeroing it removes exactly that head's term from the attention block's write to the residual stream.
"""

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from ._hooks import HookContext, Intervention
from ._models import n_heads, resolve_layer
from ._positions import Positions, check_positions, position_mask
from .errors import ConfigError


def head_mask(model: nn.Module, point: str, heads: int | Iterable[int]) -> Tensor:
    """``[head]`` bools: the chosen heads (negative indices count from the last)."""
    if point != "attn_heads":
        raise ConfigError(f"heads= selects attention heads; it needs the 'attn_heads' point, not {point!r}")
    n = n_heads(model)
    chosen = [heads] if isinstance(heads, int) else list(heads)
    bad = [h for h in chosen if isinstance(h, bool) or not isinstance(h, int) or not -n <= h < n]
    if bad or not chosen:
        raise ConfigError(f"heads must be indices in {-n}..{n - 1} (this model has {n} heads), got {heads!r}")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[[h % n for h in chosen]] = True
    return mask


def ablate_heads(
    model: nn.Module, heads: Mapping[int, int | Iterable[int]], *, positions: Positions = "all"
) -> Intervention:
    """Zero the output of the chosen heads (``{layer: heads}``) before the output projection mixes them.

    Args:
        model: a causal LM of a supported architecture.
        heads: which heads of which layers, e.g. ``{2: [0, 3], -1: 1}``.
        positions: where, as in :meth:`~repe_unlearn.ControlVector.apply`.

    Returns:
        A lazy, reusable :class:`~repe_unlearn.Intervention` at ``attn_heads`` (for mean ablation, patch from a
        cache of mean head outputs with :func:`~repe_unlearn.patch` and ``heads=``).
    """
    check_positions(positions)
    if not isinstance(heads, Mapping) or not heads:
        raise ConfigError(f"heads must be a non-empty {{layer: head indices}} mapping, got {heads!r}")
    masks = {resolve_layer(model, layer): head_mask(model, "attn_heads", chosen) for layer, chosen in heads.items()}

    def zero(act: Tensor, ctx: HookContext) -> Tensor:
        where = position_mask(positions, act, ctx.attention_mask)[:, :, None] & masks[ctx.layer].to(act.device)
        return act.masked_fill(where[..., None], 0.0)

    return Intervention(model, sorted(masks), "attn_heads", zero, description="ablate_heads")


__all__ = ["ablate_heads", "head_mask"]
