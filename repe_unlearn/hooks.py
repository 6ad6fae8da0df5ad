"""Hook registration: the only module in the package that calls ``register_forward(_pre)_hook``.

An intervention is a function ``fn(activation, ctx) -> new activation | None`` attached at a hook point of
some layers. ``None`` leaves the activation alone (reading); a returned tensor replaces it. Hooks never edit
in place, so autograd flows through them (RMU trains through hooked layers).

Composition: hooks on the same module run in registration order, each seeing the activation as the previous
one left it (PyTorch's rule). Nested ``with`` blocks therefore compose outer-first, and unwind inner-first.
"""

import inspect
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ._typing import AttentionMask
from .errors import HookPointError, ShapeError
from .models import HookPoint, hook_module, resolve_layers


@dataclass(frozen=True)
class HookContext:
    """What a hook function knows besides the activation itself."""

    layer: int
    point: HookPoint
    attention_mask: AttentionMask | None  # of the current forward pass; None when the caller passed none


HookFn = Callable[[Tensor, HookContext], Tensor | None]


class HookHandle:
    """Owns the hooks of one intervention. ``remove()`` is idempotent; usable as a context manager."""

    def __init__(self, model: nn.Module, handles: list[RemovableHandle], description: str) -> None:
        self._model = weakref.ref(model)
        self._handles = handles
        self.description = description

    @property
    def active(self) -> bool:
        """Whether the hooks are still attached."""
        return bool(self._handles)

    def remove(self) -> None:
        """Detach every hook of this intervention; calling it again does nothing."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()
        model = self._model()
        if model is not None and model in _ACTIVE:
            _ACTIVE[model].discard(self)

    def __enter__(self) -> "HookHandle":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"HookHandle({self.description}, {state})"


_ACTIVE: "weakref.WeakKeyDictionary[nn.Module, set[HookHandle]]" = weakref.WeakKeyDictionary()


def active_hooks(model: nn.Module) -> list[HookHandle]:
    """The interventions of this package currently attached to ``model``."""
    return sorted(_ACTIVE.get(model, set()), key=id)


def remove_hooks(model: nn.Module) -> int:
    """Remove every hook this package attached to ``model`` (hooks added by others stay); returns the count."""
    handles = active_hooks(model)
    for handle in handles:
        handle.remove()
    return len(handles)


def _unpack(output: Any, where: str) -> tuple[Tensor, Callable[[Tensor], Any]]:
    """The activation inside a module output, and how to rebuild the output around a replacement.

    transformers 5 decoder layers return a tensor, attention modules a tuple whose first item is the
    activation; indexing ``[0]`` is only done on tuples, since on a tensor it would take batch row 0.
    """
    if isinstance(output, Tensor):
        return output, lambda new: new
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        rest = output[1:]
        return output[0], lambda new: (new, *rest)
    raise HookPointError(f"the output of {where} is a {type(output).__name__}, not a tensor or a tuple led by one")


def _mask_position(model: nn.Module) -> int | None:
    try:
        names = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return None
    return names.index("attention_mask") if "attention_mask" in names else None


def attach(
    model: nn.Module,
    layers: int | Iterable[int] | None,
    point: HookPoint,
    fn: HookFn,
    *,
    description: str | None = None,
) -> HookHandle:
    """Run ``fn`` at ``point`` of each of ``layers`` (``None``: all; negative indices allowed).

    Returns a :class:`HookHandle`; ``with attach(...):`` removes the hooks when the block ends, also on error.
    Everything is validated before the first hook is registered, so a bad argument leaves no hook behind.
    """
    indices = resolve_layers(model, layers)
    targets = [(layer, *hook_module(model, layer, point)) for layer in indices]
    mask_index = _mask_position(model)
    state: dict[str, Tensor | None] = {"mask": None}

    def track_mask(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        mask = kwargs.get("attention_mask")
        if mask is None and mask_index is not None and len(args) > mask_index:
            mask = args[mask_index]
        state["mask"] = mask if isinstance(mask, Tensor) else None

    def make_post(layer: int, where: str) -> Callable[[nn.Module, tuple[Any, ...], Any], Any]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            act, rebuild = _unpack(output, where)
            new = fn(act, HookContext(layer, point, state["mask"]))
            return None if new is None else rebuild(_checked(new, act, where))

        return hook

    def make_pre(layer: int, where: str) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args and isinstance(args[0], Tensor):
                new = fn(args[0], HookContext(layer, point, state["mask"]))
                return None if new is None else ((_checked(new, args[0], where), *args[1:]), kwargs)
            act = kwargs.get("hidden_states")
            if not isinstance(act, Tensor):
                raise HookPointError(f"{where} received no hidden_states tensor (positional or keyword)")
            new = fn(act, HookContext(layer, point, state["mask"]))
            return None if new is None else (args, {**kwargs, "hidden_states": _checked(new, act, where)})

        return hook

    handles = [model.register_forward_pre_hook(track_mask, with_kwargs=True)]
    try:
        for layer, module, kind in targets:
            where = f"{point} of layer {layer}"
            if kind == "pre":
                handles.append(module.register_forward_pre_hook(make_pre(layer, where), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(make_post(layer, where)))
    except BaseException:
        for handle in handles:
            handle.remove()
        raise
    label = description or getattr(fn, "__name__", "hook")
    group = HookHandle(model, handles, f"{label} at {point} of layers {indices}")
    _ACTIVE.setdefault(model, set()).add(group)
    return group


@dataclass(frozen=True)
class LayerCall:
    """The arguments one decoder layer was called with (hidden states first), to replay it later."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @property
    def hidden_states(self) -> Tensor:
        """The residual stream the layer received."""
        hidden = self.args[0] if self.args else self.kwargs.get("hidden_states")
        if not isinstance(hidden, Tensor):
            raise HookPointError("the captured layer call holds no hidden_states tensor")
        return hidden

    def with_hidden_states(self, hidden: Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` for calling the layer again on other hidden states."""
        if self.args:
            return (hidden, *self.args[1:]), self.kwargs
        return self.args, {**self.kwargs, "hidden_states": hidden}


def capture_calls(model: nn.Module, layers: int | Iterable[int] | None) -> tuple[HookHandle, dict[int, LayerCall]]:
    """Keep the arguments (masks, position embeddings, ...) each of ``layers`` is called with.

    Replaying a stretch of layers from a cached residual stream needs exactly these, and they differ by
    architecture and even by layer (Gemma2's sliding-window layers get their own mask).
    """
    indices = resolve_layers(model, layers)
    calls: dict[int, LayerCall] = {}
    handles = []
    for layer in indices:
        module, _ = hook_module(model, layer, "resid_pre")

        def keep(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], layer: int = layer) -> None:
            calls[layer] = LayerCall(args, dict(kwargs))

        handles.append(module.register_forward_pre_hook(keep, with_kwargs=True))
    group = HookHandle(model, handles, f"capture_calls of layers {indices}")
    _ACTIVE.setdefault(model, set()).add(group)
    return group, calls


def _checked(new: Any, old: Tensor, where: str) -> Tensor:
    if not isinstance(new, Tensor) or new.shape != old.shape:
        got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
        raise ShapeError(f"a hook at {where} returned {got}; return None or a tensor of shape {tuple(old.shape)}")
    return new


def last_positions(mask: AttentionMask, n_pos: int) -> Tensor:
    """The part of ``mask`` that covers the last ``n_pos`` positions (all of it outside cached generation)."""
    return mask[:, -n_pos:]


__all__ = [
    "HookContext",
    "HookFn",
    "HookHandle",
    "LayerCall",
    "active_hooks",
    "attach",
    "capture_calls",
    "last_positions",
    "remove_hooks",
]
