"""Attention heads: choosing heads by index, and zero-ablating what chosen heads write.

A head's output is its slice of ``attn_heads`` ``[batch pos head d_head]``, the input of the attention output
projection; zeroing it removes exactly that head's term from the attention block's write to the residual stream.
"""

import numbers
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from ._hooks import HookContext, Intervention
from ._models import n_heads, resolve_layer
from ._positions import Positions, check_positions, position_mask
from .errors import ConfigError

Index = int | numbers.Integral  # numpy integers count too


def head_mask(model: nn.Module, point: str, heads: Index | Iterable[Index]) -> Tensor:
    """``[head]`` bools: the chosen heads (negative indices count from the last)."""
    if point != "attn_heads":
        raise ConfigError(f"heads= selects attention heads; it needs the 'attn_heads' point, not {point!r}")
    n = n_heads(model)
    if isinstance(heads, numbers.Integral) or not isinstance(heads, Iterable):
        heads = [heads]  # type: ignore[list-item]
    chosen = list(heads)
    bad = [h for h in chosen if isinstance(h, bool) or not isinstance(h, numbers.Integral) or not -n <= int(h) < n]
    if bad or not chosen:
        raise ConfigError(f"heads must be indices in {-n}..{n - 1} (this model has {n} heads), got {heads!r}")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[[int(h) % n for h in chosen]] = True
    return mask


def ablate_heads(
    model: nn.Module, heads: Mapping[Index, Index | Iterable[Index]], *, positions: Positions = "all"
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
    masks: dict[int, Tensor] = {}
    for layer, chosen in heads.items():  # two keys naming one layer (-1 and n-1) both count
        plain = isinstance(layer, numbers.Integral) and not isinstance(layer, bool)
        index = resolve_layer(model, int(layer) if plain else layer)  # type: ignore[arg-type]  # refuses a non-int
        masks[index] = masks.get(index, torch.zeros(n_heads(model), dtype=torch.bool)) | head_mask(
            model, "attn_heads", chosen
        )

    def zero(act: Tensor, ctx: HookContext) -> Tensor:
        where = position_mask(positions, act, ctx.attention_mask)[:, :, None] & masks[ctx.layer].to(act.device)
        return act.masked_fill(where[..., None], 0.0)

    return Intervention(model, sorted(masks), "attn_heads", zero, description="ablate_heads")


__all__ = ["ablate_heads", "head_mask"]
