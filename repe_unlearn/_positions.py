"""Which positions an intervention acts on: all, the real (non-pad) ones, the last real one, a slice, from
index k on, or a boolean mask — one vocabulary for steering and ablation alike.

During cached generation a pass holds the new token only; the attention mask's last ``pos`` columns describe
it, and its length tells where the pass sits in the whole sequence.

Scoring a continuation feeds its context and all but its last token, so a row's last real token lies inside
the continuation, at a place that differs from choice to choice. MCQ scoring therefore names, with
:func:`prompt_ends`, each row's last prompt token (whose output predicts the continuation), and ``"last"``
means that position during its forward passes: every choice of a question is scored under the same
intervention.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

import torch
from torch import Tensor

from ._masking import real_positions
from .errors import ConfigError, ShapeError

Positions = Literal["all", "non-pad", "last"] | int | slice | Tensor
NAMED = ("all", "non-pad", "last")
_PROMPT_ENDS: ContextVar[Tensor | None] = ContextVar("prompt_ends", default=None)


@contextmanager
def prompt_ends(ends: Tensor) -> Iterator[None]:
    """Within this block, ``"last"`` means position ``ends[row]`` of each row (the last token of its prompt)
    in passes whose batch has ``len(ends)`` rows, instead of each row's last real token."""
    token = _PROMPT_ENDS.set(ends)
    try:
        yield
    finally:
        _PROMPT_ENDS.reset(token)


def check_positions(positions: object) -> None:
    """Refuse a position selection this module cannot read (before any hook is attached)."""
    if isinstance(positions, str):
        if positions not in NAMED:
            valid = ", ".join(NAMED)
            raise ConfigError(f"unknown positions {positions!r}; valid: {valid}, an int, a slice, a bool mask")
        return
    if isinstance(positions, bool) or not isinstance(positions, (int, slice, Tensor)):
        valid = ", ".join(NAMED)
        raise ConfigError(f"positions must be one of {valid}, an int, a slice or a bool mask, got {positions!r}")
    if isinstance(positions, Tensor) and (positions.dtype != torch.bool or positions.ndim not in (1, 2)):
        got = f"{positions.dtype} {tuple(positions.shape)}"
        raise ConfigError(f"a positions mask must be a bool tensor [pos] or [batch pos], got {got}")


def position_mask(positions: Positions, act: Tensor, attention_mask: Tensor | None) -> Tensor:
    """``[batch pos]`` bools: where an intervention acts on ``act`` ``[batch pos ...]``.

    ``"all"``: every position; ``"non-pad"``: positions the attention mask marks real (all when there is no
    mask); ``"last"``: each row's last real position (inside `prompt_ends`, its prompt's last); an int ``k``:
    positions from ``k`` on (negative: the last ``-k``); a slice: those positions; a bool mask ``[pos]`` or
    ``[batch pos]``: where it is True.

    Ints and slices count positions of the whole sequence: during cached generation, where a pass holds only
    the new token, the attention mask tells how many came before (without a mask, the pass's own columns are
    counted). A bool mask covers either the pass's positions or the whole sequence (its last columns are used).
    """
    batch, n_pos = act.shape[0], act.shape[1]
    if isinstance(positions, str):
        if positions == "all":
            return torch.ones(batch, n_pos, dtype=torch.bool, device=act.device)
        real = real_positions(attention_mask, act.flatten(2), torch.bool)
        if positions == "non-pad":
            return real
        last = n_pos - 1 - torch.flip(real, dims=[1]).int().argmax(dim=1)
        ends = _PROMPT_ENDS.get()
        if ends is not None and ends.shape == (batch,) and int(ends.max()) < n_pos:
            last = ends.to(act.device)
        keep = torch.zeros(batch, n_pos, dtype=torch.bool, device=act.device)
        keep[torch.arange(batch, device=act.device), last] = real.any(dim=1)
        return keep
    total = attention_mask.shape[-1] if attention_mask is not None and attention_mask.shape[-1] > n_pos else n_pos
    if isinstance(positions, (int, slice)):
        chosen = slice(positions, None) if isinstance(positions, int) else positions
        keep = torch.zeros(batch, total, dtype=torch.bool, device=act.device)
        keep[:, chosen] = True
        return keep[:, total - n_pos :]
    mask = positions.to(device=act.device)
    if mask.shape[-1] not in (n_pos, total) or (mask.ndim == 2 and mask.shape[0] != batch):
        raise ShapeError(f"a positions mask of shape {tuple(mask.shape)} does not fit activations [{batch} {n_pos} d]")
    return mask[..., mask.shape[-1] - n_pos :].expand(batch, n_pos)


__all__ = ["NAMED", "Positions", "check_positions", "position_mask", "prompt_ends"]
