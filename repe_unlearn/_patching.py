"""Activation patching: run a model with some activations taken from another run, and the clean/corrupted sweep
over layers × positions that locates where a fact is carried (the basic causal-tracing step).
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ._cache import ActivationCache, run_with_cache
from ._heads import head_mask
from ._hooks import HookContext, Intervention
from ._models import HookPoint, n_heads, resolve_layers
from ._positions import Positions, check_positions, position_mask
from .errors import ConfigError, LayerNotFoundError, ShapeError


def patch(
    model: nn.Module,
    cache: ActivationCache,
    layers: int | Iterable[int] | None = None,
    positions: Positions = "all",
    *,
    heads: int | Iterable[int] | None = None,
) -> Intervention:
    """Replace the activations at ``cache.point`` of ``layers`` by the cached ones (from another run).

    Args:
        model: the model to run; nothing is hooked until a ``with`` block enters the result.
        cache: activations of another run at the same hook point, ``[batch pos d_model]`` per layer
            (``[batch pos head d_head]`` at ``attn_heads``), with the same batch and positions as the runs
            patched (a batch of one is broadcast).
        layers: which of the cache's layers to patch (default: all it holds).
        positions: where, as in :meth:`~repe_unlearn.ControlVector.apply`.
        heads: with an ``attn_heads`` cache, patch only these heads (default: all).

    Returns:
        A lazy, reusable :class:`~repe_unlearn.Intervention`.
    """
    check_positions(positions)
    if cache.point == "attn_pattern":
        raise ConfigError("attention patterns are read-only; patch 'attn_heads' to replace what heads write")
    chosen = cache.layers if layers is None else resolve_layers(model, layers)
    missing = [layer for layer in chosen if layer not in cache]
    if missing:
        raise LayerNotFoundError(f"the cache holds layers {cache.layers}, not {missing}")
    source = {layer: cache[layer] for layer in chosen}
    only_heads = None if heads is None else head_mask(model, cache.point, heads)

    def replace(act: Tensor, ctx: HookContext) -> Tensor:
        cached = source[ctx.layer]
        if cached.shape[1:] != act.shape[1:] or cached.shape[0] not in (1, act.shape[0]):
            raise ShapeError(
                f"cached layer {ctx.layer} is {tuple(cached.shape)} but this run's is {tuple(act.shape)}: patching "
                "needs the same positions (give both runs the same number of tokens)"
            )
        cached = cached.to(device=act.device, dtype=act.dtype).expand_as(act)
        if isinstance(positions, str) and positions == "all" and only_heads is None:
            return cached
        where = position_mask(positions, act, ctx.attention_mask)[(...,) + (None,) * (act.ndim - 2)]
        if only_heads is not None:
            where = where & only_heads.to(act.device)[:, None]
        return torch.where(where, cached, act)

    return Intervention(model, chosen, cache.point, replace, description="patch")


@dataclass
class PatchingSweep:
    """The effect of patching each (layer, position) of a clean run into a corrupted one."""

    effects: Tensor  # [layer pos] (or [layer head]): (metric patched - corrupted) / (clean - corrupted)
    raw: Tensor  # [layer pos] (or [layer head]): the metric itself
    clean: float
    corrupted: float
    layers: list[int]
    over: str = "positions"  # what the second axis indexes: "positions" or "heads"


def _scalar(metric: Callable[[Tensor], Tensor], logits: Tensor) -> float:
    value = metric(logits)
    if isinstance(value, Tensor) and value.numel() != 1:
        raise ConfigError(f"the metric must return one number, got a tensor of shape {tuple(value.shape)}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"the metric must return one number, got {type(value).__name__}") from None


@torch.no_grad()
def patching_sweep(
    model: nn.Module,
    clean: Mapping[str, Tensor],
    corrupted: Mapping[str, Tensor],
    metric: Callable[[Tensor], Tensor],
    *,
    layers: int | Iterable[int] | None = None,
    point: HookPoint | None = None,
    over: Literal["positions", "heads"] = "positions",
) -> PatchingSweep:
    """Patch the clean run's activation at every (layer, position) into the corrupted run, one at a time
    (with ``over="heads"``: every (layer, head) output at all positions, at ``attn_heads``).

    Args:
        model: a causal LM.
        clean: inputs of the run that has the behaviour (``input_ids`` ``[batch pos]``, ...).
        corrupted: inputs of the same length without it (e.g. another subject).
        metric: ``metric(logits) -> scalar``, e.g. the logit of the right answer at the last position.
        layers: the layers to sweep (default: all).
        point: the hook point to patch (default ``resid_post``; ``over="heads"`` patches ``attn_heads``).
        over: ``"positions"`` (effects ``[layer pos]``) or ``"heads"`` (effects ``[layer head]``).

    Returns:
        A :class:`PatchingSweep`: normalised effects ``[layer pos]`` or ``[layer head]`` (0: no effect, 1:
        all of the clean behaviour restored) and the raw metric values.
    """
    if over not in ("positions", "heads"):
        raise ConfigError(f"over must be 'positions' or 'heads', got {over!r}")
    if over == "heads":
        if point not in (None, "attn_heads"):
            raise ConfigError(f"a sweep over heads patches 'attn_heads', not {point!r}")
        point = "attn_heads"
    elif point is None:
        point = "resid_post"
    if point == "attn_pattern":
        raise ConfigError("attention patterns are read-only; sweep 'attn_heads' to patch what heads write")
    if clean["input_ids"].shape != corrupted["input_ids"].shape:
        raise ShapeError(
            f"clean and corrupted inputs have shapes {tuple(clean['input_ids'].shape)} and "
            f"{tuple(corrupted['input_ids'].shape)}; a patching sweep needs the same positions"
        )
    indices = resolve_layers(model, layers)
    output, cache = run_with_cache(model, clean, indices, point)
    assert isinstance(cache, ActivationCache)
    clean_value = _scalar(metric, output.logits)
    corrupted_value = _scalar(metric, model(**corrupted).logits)
    if clean_value == corrupted_value:
        raise ConfigError(f"the metric is {clean_value} on both runs: there is no difference to locate")
    n_pos = clean["input_ids"].shape[1]
    width = n_heads(model) if over == "heads" else n_pos
    raw = torch.zeros(len(indices), width)
    for row, layer in enumerate(indices):
        for col in range(width):
            if over == "heads":
                patched = patch(model, cache, [layer], heads=col)
            else:
                only = torch.zeros(n_pos, dtype=torch.bool)
                only[col] = True
                patched = patch(model, cache, [layer], positions=only)
            with patched:
                raw[row, col] = _scalar(metric, model(**corrupted).logits)
    effects = (raw - corrupted_value) / (clean_value - corrupted_value)
    return PatchingSweep(effects, raw, clean_value, corrupted_value, indices, over)


__all__ = ["PatchingSweep", "patch", "patching_sweep"]
