"""Activation caches: ``record()`` reads hook points during a forward pass into an ``ActivationCache``.

``cache[layer]`` is ``[batch pos d_model]`` (``[batch pos head d_head]`` at ``attn_heads``, ``[batch head query
key]`` at ``attn_pattern``), beside the attention mask of the same (query) positions. With
``stop_after=True`` the forward pass ends right after the deepest recorded hook point, so no compute is spent
on later layers or the LM head (RMU trains through this with ``keep_graph=True``).
"""

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._hooks import HookContext, attach
from ._io import load_tensors, save_tensors
from ._masking import aligned, last_token, masked_mean
from ._models import HOOK_POINTS, RESIDUAL_POINTS, HookPoint, n_layers, position_dim, resolve_layers
from ._typing import CachedPooled, CachedStack
from .errors import ConfigError, FormatError, HookPointError, LayerNotFoundError, ShapeError

_KIND = "activation_cache"


class _StopForward(BaseException):
    """Raised by the deepest recording hook to end the forward pass; caught by the record() that raised it.

    A ``BaseException``, so that a user's ``except Exception`` around the model call cannot swallow it.
    """

    def __init__(self, owner: object) -> None:
        super().__init__("forward pass stopped early by repe_unlearn.record(stop_after=True)")
        self.owner = owner


_POOLERS = {"last": last_token, "mean": masked_mean}


def _check_cache(acts: Mapping[int, Tensor], point: str, mask: Tensor | None) -> None:
    """Refuse activations that cannot be one pass's at ``point``: wrong rank, unequal batches, a mask that does
    not cover their positions."""
    rank = 3 if point in RESIDUAL_POINTS else 4
    for layer, act in acts.items():
        if not isinstance(act, Tensor) or act.ndim != rank:
            got = tuple(act.shape) if isinstance(act, Tensor) else type(act).__name__
            raise ShapeError(f"layer {layer} at {point} must be a tensor with {rank} dimensions, got {got}")
    batches = {act.shape[0] for act in acts.values()}
    if len(batches) > 1:
        raise ShapeError(f"the layers hold different batch sizes {sorted(batches)}; a cache holds one pass")
    if mask is not None and acts:
        first = next(iter(acts.values()))
        n_pos = first.shape[position_dim(point)]
        if mask.ndim != 2 or mask.shape[0] != first.shape[0] or mask.shape[1] != n_pos:
            raise ShapeError(
                f"the attention mask {tuple(mask.shape)} does not cover the activations' [batch={first.shape[0]} "
                f"pos={n_pos}]"
            )


class ActivationCache(Mapping[int, Tensor]):
    """Activations per layer from one forward pass, with the attention mask of the same positions."""

    def __init__(
        self,
        activations: Mapping[int, Tensor] | None = None,
        *,
        point: HookPoint = "resid_post",
        attention_mask: Tensor | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if point not in HOOK_POINTS:
            raise HookPointError(f"unknown hook point {point!r}; valid: {', '.join(HOOK_POINTS)}")
        self._acts: dict[int, Tensor] = dict(activations or {})
        _check_cache(self._acts, point, attention_mask)
        self.steps: list[ActivationCache] = []  # one cache per forward pass, with record(every_pass=True)
        self.point: HookPoint = point
        self.attention_mask = attention_mask
        self.metadata: dict[str, Any] = dict(metadata or {})

    def _key(self, layer: int) -> int:
        n = self.metadata.get("n_layers")
        return layer + n if layer < 0 and isinstance(n, int) else layer

    def __getitem__(self, layer: int) -> Tensor:
        key = self._key(layer)
        if key not in self._acts:
            if not self._acts:
                raise LayerNotFoundError(f"layer {layer}: the cache is empty (did a forward pass run inside record()?)")
            raise LayerNotFoundError(f"layer {layer} is not in this cache; it holds layers {self.layers}")
        return self._acts[key]

    def __contains__(self, layer: object) -> bool:
        return isinstance(layer, int) and self._key(layer) in self._acts

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._acts))

    def __len__(self) -> int:
        return len(self._acts)

    @property
    def layers(self) -> list[int]:
        """Recorded layer indices, ascending."""
        return sorted(self._acts)

    def stack(self, layers: Iterable[int] | None = None) -> CachedStack:
        """All (or the given) layers as one ``[layer batch pos d_model]`` tensor (``[layer *shape]`` in general)."""
        return torch.stack([self[layer] for layer in (self.layers if layers is None else layers)])

    def pooled(self, how: str = "last") -> dict[int, CachedPooled]:
        """One vector per example and layer: ``"last"`` non-pad token or ``"mean"`` over non-pad tokens
        (``[batch head d_head]`` at ``attn_heads``; patterns have no pooling)."""
        if how not in _POOLERS:
            raise ConfigError(f"unknown pooling {how!r}; valid: {', '.join(_POOLERS)}")
        if self.point == "attn_pattern":
            raise ConfigError("attention patterns [batch head query key] have no pooling over positions")
        pool = _POOLERS[how]
        return {
            layer: pool(acts.flatten(2), self.attention_mask).unflatten(-1, acts.shape[2:])
            for layer, acts in sorted(self._acts.items())
        }

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "ActivationCache":
        """A copy with activations on ``device`` / in ``dtype`` (the mask keeps its dtype)."""
        acts = {k: v.to(device=device, dtype=dtype) for k, v in self._acts.items()}
        mask = None if self.attention_mask is None else self.attention_mask.to(device=device)
        return ActivationCache(acts, point=self.point, attention_mask=mask, metadata=self.metadata)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write to a safetensors file (JSON metadata: model, layers, point)."""
        tensors = {f"layers.{k}": v for k, v in self._acts.items()}
        if self.attention_mask is not None:
            tensors["attention_mask"] = self.attention_mask
        meta = {**self.metadata, "kind": _KIND, "point": self.point, "layers": self.layers}
        save_tensors(path, tensors, meta, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "ActivationCache":
        """Read a cache written by :meth:`save`."""
        tensors, meta = load_tensors(path, kind=_KIND)
        mask = tensors.pop("attention_mask", None)
        try:
            acts = {int(k.removeprefix("layers.")): v for k, v in tensors.items()}
        except ValueError:
            names = sorted(tensors)
            raise FormatError(f"{path}: tensor names must be 'layers.<int>' or 'attention_mask', got {names}") from None
        point = meta.pop("point", None)
        if point not in HOOK_POINTS:
            raise FormatError(f"{path}: unknown hook point {point!r} in its metadata")
        rank = 3 if point in RESIDUAL_POINTS else 4
        bad = [layer for layer, v in acts.items() if v.ndim != rank]
        if bad or (mask is not None and mask.ndim != 2):
            raise FormatError(f"{path}: activations at {point} must have {rank} dimensions and the mask [batch pos]")
        for key in ("kind", "layers"):
            meta.pop(key, None)
        return cls(acts, point=point, attention_mask=mask, metadata=meta)

    def _repr_html_(self) -> str:
        """A table per layer for notebooks: shape, dtype, mean per-token norm."""
        if not self._acts:
            return f"<b>ActivationCache</b> (point <code>{self.point}</code>, empty)"
        rows = []
        for layer in self.layers:
            acts = self._acts[layer]
            norms = acts.detach().float().norm(dim=-1)
            if self.attention_mask is not None and self.attention_mask.shape == norms.shape:
                norm = float(norms[self.attention_mask.bool()].mean())
            else:
                norm = float(norms.mean())
            rows.append(
                f"<tr><td>{layer}</td><td>{list(acts.shape)}</td><td>{str(acts.dtype).removeprefix('torch.')}"
                f"</td><td>{norm:.3g}</td></tr>"
            )
        model = self.metadata.get("model", "?")
        return (
            f"<b>ActivationCache</b> of <code>{model}</code> at <code>{self.point}</code>, "
            f"mask: {'yes' if self.attention_mask is not None else 'no'}"
            "<table><tr><th>layer</th><th>shape</th><th>dtype</th><th>mean token norm</th></tr>"
            + "".join(rows)
            + "</table>"
        )

    def __repr__(self) -> str:
        if not self._acts:
            return f"ActivationCache(point={self.point!r}, empty)"
        first = self._acts[self.layers[0]]
        model = self.metadata.get("model", "?")
        mask = "yes" if self.attention_mask is not None else "no"
        return (
            f"ActivationCache(model={model!r}, point={self.point!r}, layers={_span(self.layers)}, "
            f"shape={list(first.shape)}, dtype={str(first.dtype).removeprefix('torch.')}, "
            f"device={first.device}, mask={mask})"
        )


def _span(layers: list[int]) -> str:
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return str(layers)


@contextmanager
def record(
    model: nn.Module,
    layers: int | Iterable[int] | None = None,
    point: HookPoint = "resid_post",
    *,
    keep_graph: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    stop_after: bool = False,
    every_pass: bool = False,
) -> Iterator[ActivationCache]:
    """Record ``point`` at ``layers`` (``None``: all) during the forward passes run inside the block.

    ``every_pass=True`` keeps every pass, for ``model.generate``: ``cache.steps`` holds one cache per forward
    pass (the prompt, then each new token), and ``cache[layer]`` their concatenation over positions
    ``[batch prompt+new d_model]``, with the attention masks concatenated alike (patterns: over queries, each
    step's keys padded with zeros to the full length, so ``[batch head prompt+new prompt+new]``).

    After the block, ``cache[layer]`` holds the last pass's activations. By default they are detached
    *copies* on the CPU (``device``), optionally cast (``dtype``, e.g. ``torch.float16`` to halve memory), so a
    model that later edits a tensor in place cannot change what was recorded, on any device.
    ``keep_graph=True`` keeps them attached to autograd on the model's device, for training (cloned, except the
    last one of a ``stop_after`` pass, which nothing can edit afterwards). Inputs are moved to the device of
    the input embedding. ``stop_after=True`` ends the pass right after the deepest recorded point: the
    statement running the model then exits the block, so make it the block's last statement.

    Args:
        model: a causal LM of a supported architecture (or its base model).
        layers: layer indices (negative allowed), one index, or ``None`` for every layer.
        point: the hook point to read (``resid_post`` by default).
        keep_graph: keep activations attached to autograd, on the model's device.
        device: where recorded copies go (CPU by default).
        dtype: cast recorded copies, e.g. ``torch.float16``.
        stop_after: end the forward pass right after the deepest recorded point.
        every_pass: keep every forward pass (generation), not only the last.

    Yields:
        An :class:`ActivationCache`: ``cache[layer]`` is ``[batch pos d_model]``, with ``cache.attention_mask``
        ``[batch pos]`` of the same pass (None when the pass was given none).
    """
    if point not in HOOK_POINTS:
        raise HookPointError(f"unknown hook point {point!r}; valid: {', '.join(HOOK_POINTS)}")
    if every_pass and stop_after:
        raise ConfigError("every_pass=True keeps the passes of a generation; it cannot stop them early")
    indices = resolve_layers(model, layers)
    if keep_graph and (device is not None or dtype is not None):
        raise ConfigError("keep_graph=True keeps activations where the model made them; drop device=/dtype=")
    target = None if keep_graph else torch.device(device if device is not None else "cpu")
    meta = {"model": type(model).__name__, "n_layers": n_layers(model)}
    name_or_path = getattr(getattr(model, "config", None), "_name_or_path", "")
    if name_or_path:
        meta["name_or_path"] = str(name_or_path)
    cache = ActivationCache(point=point, metadata=meta)
    owner = object()
    first, deepest = indices[0], indices[-1]

    passes: list[ActivationCache] = []

    def keep_pass() -> None:
        if cache._acts:
            passes.append(ActivationCache(dict(cache._acts), point=point, attention_mask=cache.attention_mask))

    def store(act: Tensor, ctx: HookContext) -> None:
        if ctx.layer == first:  # the lowest recorded point fires first in every pass: a new pass begins
            if every_pass:
                keep_pass()
            cache._acts.clear()
            mask = ctx.attention_mask
            if mask is not None:
                mask = aligned(mask, act.shape[position_dim(point)]).detach().to(target or mask.device, copy=True)
            cache.attention_mask = mask
        last = stop_after and ctx.layer == deepest
        if target is not None:
            cache._acts[ctx.layer] = act.detach().to(device=target, dtype=dtype, copy=True)
        else:
            cache._acts[ctx.layer] = act if last else act.clone()
        if last:
            raise _StopForward(owner)

    with attach(model, indices, point, store, description="record"):
        try:
            yield cache
        except _StopForward as stop:
            if stop.owner is not owner:
                raise
        finally:
            if every_pass:
                keep_pass()
                _concatenate(cache, passes)


def _concatenate(cache: ActivationCache, passes: list[ActivationCache]) -> None:
    """Fill ``cache`` with the passes of a generation, concatenated over positions, and keep them as steps."""
    cache.steps = passes
    if not passes:
        return
    # what must agree between passes: batch and width ([batch pos ...]), or batch and heads ([batch head q k])
    pattern = cache.point == "attn_pattern"
    sizes = {(s[0], s[1]) if pattern else (s[0], *s[2:]) for p in passes for s in (p[k].shape for k in p.layers)}
    if len(sizes) > 1 or any(p.layers != passes[0].layers for p in passes):
        raise ShapeError(
            "record(every_pass=True) kept passes of different batch sizes or layers; it concatenates the passes of "
            "one generate() call: use one record block per call"
        )
    if cache.point == "attn_pattern":
        # [batch head query key]: the queries of the passes follow each other, and each pass's keys are the last
        # ones of the sequence so far (all of it, or a sliding window's last keys): right-align them, zeros before
        ends = torch.tensor([p[p.layers[0]].shape[2] for p in passes]).cumsum(0).tolist()
        total = ends[-1]
        cache._acts = {
            layer: torch.cat(
                [F.pad(p[layer], (end - p[layer].shape[-1], total - end)) for p, end in zip(passes, ends, strict=True)],
                dim=2,
            )
            for layer in passes[0].layers
        }
    else:
        cache._acts = {layer: torch.cat([p[layer] for p in passes], dim=1) for layer in passes[0].layers}
    masks = [p.attention_mask for p in passes]
    if all(m is None for m in masks):
        cache.attention_mask = None
    else:  # a pass given no mask has every position real (generate gives the prompt none when it is all ones)
        dim = position_dim(cache.point)
        filled = [
            m if m is not None else torch.ones(p[p.layers[0]].shape[0], p[p.layers[0]].shape[dim], dtype=torch.long)
            for p, m in zip(passes, masks, strict=True)
        ]
        device = next(m.device for m in masks if m is not None)
        cache.attention_mask = torch.cat([m.to(device) for m in filled], dim=1)


def collect(
    model: nn.Module,
    inputs: Mapping[str, Tensor],
    layers: int | Iterable[int] | None = None,
    point: HookPoint = "resid_post",
    *,
    stop_after: bool = True,
    keep_graph: bool = False,
    dtype: torch.dtype | None = None,
) -> ActivationCache:
    """Run ``model(**inputs)`` once and return the recorded cache (a one-call form of :func:`record`).

    Args:
        model: a causal LM of a supported architecture.
        inputs: ``input_ids`` ``[batch pos]`` and optionally ``attention_mask`` ``[batch pos]``, on any device
            (moved to the input embedding's).
        layers: layer indices (negative allowed), one index, or ``None`` for every layer.
        point: the hook point to read.
        stop_after: end the pass right after the deepest recorded point (on by default).
        keep_graph: keep activations attached to autograd, on the model's device.
        dtype: cast the recorded copies.

    Returns:
        An :class:`ActivationCache` with ``[batch pos d_model]`` per layer and the mask.
    """
    recording = record(model, layers, point, keep_graph=keep_graph, dtype=dtype, stop_after=stop_after)
    with torch.set_grad_enabled(keep_graph and torch.is_grad_enabled()), recording as cache:
        model(**inputs, use_cache=False)
    return cache


def collect_pooled(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    layers: int | Iterable[int] | None = None,
    point: HookPoint = "resid_post",
    *,
    pool: str = "last",
    dtype: torch.dtype | None = None,
) -> dict[int, Tensor]:
    """Stream over tokenized batches; one pooled ``[example d_model]`` tensor per layer, bounded memory.

    Args:
        model: a causal LM of a supported architecture.
        batches: ``{"input_ids", "attention_mask"}`` batches (e.g. from :func:`tokenize_batches`).
        layers: layer indices, one index, or ``None`` for every layer.
        point: the hook point to read.
        pool: ``"last"`` non-pad token or ``"mean"`` over non-pad tokens.
        dtype: cast the pooled vectors (e.g. ``torch.float16``).

    Returns:
        ``{layer: [example d_model]}`` over all batches, in order.
    """
    if pool not in _POOLERS:
        raise ConfigError(f"unknown pooling {pool!r}; valid: {', '.join(_POOLERS)}")
    parts: dict[int, list[Tensor]] = {}
    for batch in batches:
        pooled = collect(model, batch, layers, point).pooled(pool)
        for layer, vecs in pooled.items():
            parts.setdefault(layer, []).append(vecs if dtype is None else vecs.to(dtype))
    if not parts:
        raise ConfigError("collect_pooled() received no batches")
    return {layer: torch.cat(chunks) for layer, chunks in parts.items()}


def run_with_cache(
    model: nn.Module,
    inputs: Mapping[str, Tensor],
    layers: int | Iterable[int] | None = None,
    points: HookPoint | Sequence[HookPoint] = "resid_post",
    *,
    names_filter: Callable[[str], bool] | str | Iterable[str] | None = None,
    keep_graph: bool = False,
    dtype: torch.dtype | None = None,
) -> tuple[Any, "ActivationCache | dict[HookPoint, ActivationCache]"]:
    """Run ``model(**inputs)`` once and return its output (logits included) with the activations it made.

    Args:
        model: a causal LM of a supported architecture.
        inputs: ``input_ids`` (and ``attention_mask`` ...) as for ``model(**inputs)``.
        layers: layer indices, one index, or ``None`` for every layer.
        points: one hook point (the cache is an :class:`ActivationCache`) or several (a dict of caches by
            point, filled in the same pass).
        names_filter: keep only the hook names ``"<point>.<layer>"`` it accepts (``"resid_post.3"``): a
            function, one name or a list of names, as TransformerLens's ``names_filter``.
        keep_graph: keep activations attached to autograd (and the pass differentiable).
        dtype: cast the recorded copies.

    Returns:
        ``(output, cache)``: the model's output object and the cache(s). The full pass runs (no early stop).
    """
    accept: Callable[[str], bool] | None
    if isinstance(names_filter, str) or (not callable(names_filter) and isinstance(names_filter, Iterable)):
        allowed = {names_filter} if isinstance(names_filter, str) else set(names_filter)  # one name, or several
        bad = [n for n in allowed if not isinstance(n, str)]
        if bad:
            raise ConfigError(f"names_filter names must be strings like 'resid_post.3', got {bad[0]!r}")
        accept = allowed.__contains__
    elif names_filter is None or callable(names_filter):
        accept = names_filter
    else:
        kind = type(names_filter).__name__
        raise ConfigError(f"names_filter takes a function, a name or a list of names, got {kind}")
    single = isinstance(points, str)
    chosen: list[HookPoint] = [points] if isinstance(points, str) else list(points)
    if not chosen:
        raise ConfigError("run_with_cache needs at least one hook point")
    indices = resolve_layers(model, layers)
    caches: dict[HookPoint, ActivationCache] = {}
    with ExitStack() as stack, torch.set_grad_enabled(keep_graph and torch.is_grad_enabled()):
        for point in chosen:
            wanted = [i for i in indices if accept is None or accept(f"{point}.{i}")]
            if wanted:
                caches[point] = stack.enter_context(record(model, wanted, point, keep_graph=keep_graph, dtype=dtype))
        if not caches:
            raise ConfigError(f"names_filter kept no hook among the points {chosen} and layers {indices}")
        output = model(**inputs)
    if single:
        return output, caches[chosen[0]]
    return output, caches
