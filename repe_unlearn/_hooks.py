"""Hook registration: the only module in the package that calls ``register_forward(_pre)_hook``.

An intervention is a function ``fn(activation, ctx) -> new activation | None`` run at a hook point of some
layers. ``None`` leaves the activation alone (reading); a returned tensor replaces it. Hooks never edit in
place, so autograd flows through them (RMU trains through hooked layers).

Two forms, one mechanism:

- :class:`Intervention` is a *lazy, reusable* recipe: nothing touches the model until ``with`` enters it,
  and leaving the block removes its hooks. It can be entered any number of times, composed with ``+`` or a
  list, and handed to code that enters it later (``evaluate_mcq(..., intervention=iv)``).
- :func:`attach` hooks the model *now* and returns a :class:`HookHandle`, removed by ``remove()`` or by
  leaving a ``with`` block; a removed handle cannot be entered again.

Composition: hooks on the same module run in registration order, each seeing the activation as the previous
one left it (PyTorch's rule). Nested ``with`` blocks therefore compose outer-first, and unwind inner-first.

Every hook sees the attention mask of the forward pass in progress (``ctx.attention_mask``), tracked where
the pass enters the model (the ``*ForCausalLM`` or its base model) and forgotten when the pass ends.
"""

import inspect
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ._models import (
    HEAD_POINTS,
    HookPoint,
    d_model,
    entry_modules,
    hook_module,
    input_device,
    module_name,
    n_heads,
    resolve_layers,
)
from ._typing import AttentionMask
from .errors import ArchitectureError, ConfigError, HookPointError, ShapeError


@dataclass(frozen=True)
class HookContext:
    """What a hook function knows besides the activation itself."""

    layer: int
    point: HookPoint
    attention_mask: AttentionMask | None  # of the current forward pass; None when the caller passed none


HookFn = Callable[[Tensor, HookContext], Tensor | None]


# -- the forward pass in progress: its attention mask, its inputs' device --------------------------------------
def _mask_index(module: nn.Module) -> int | None:
    try:
        names = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return None
    return names.index("attention_mask") if "attention_mask" in names else None


@dataclass(frozen=True, eq=False)  # frames compare by identity (a mask tensor has no truth value)
class _Frame:
    """One entry of a forward pass into an entry module, and the mask that holds inside it."""

    module: nn.Module | None  # None for a replay of layers by hand
    entry: int  # the module's index in entry_modules(): 0 the model itself, 1 its base model, ...
    mask: Tensor | None


class _PassTracker:
    """The attention mask of the forward pass running through one model, shared by all its interventions.

    Pre-hooks on every entry module (:func:`~repe_unlearn._models.entry_modules`) push a frame with the mask the
    call was given; post-hooks that run even when the call raises pop it, so a mask never outlives its pass.
    A call into the base model made by the model itself continues the same pass (and keeps its mask when it
    is given none); any other call starts a new pass, also one run from inside a hook of an outer pass, whose
    hooks see their own mask again once the inner pass returns. Hooks are registered while at least one
    intervention is attached.
    """

    def __init__(self, model: nn.Module) -> None:
        self._model = weakref.ref(model)
        self.frames: list[_Frame] = []
        self.users = 0
        self._handles: list[RemovableHandle] = []
        self.warned = False

    @property
    def mask(self) -> Tensor | None:
        """The mask of the pass in progress (None outside a pass, or when the pass was given none)."""
        return self.frames[-1].mask if self.frames else None

    @property
    def depth(self) -> int:
        """How many entry calls are in progress (0: no pass entered through the model)."""
        return len(self.frames)

    def acquire(self, model: nn.Module) -> None:
        if self.users == 0:
            for entry, module in enumerate(entry_modules(model)):
                enter = self._enter(entry, _mask_index(module))
                self._handles.append(module.register_forward_pre_hook(enter, with_kwargs=True, prepend=True))
                self._handles.append(module.register_forward_hook(self._leave, always_call=True))
        self.users += 1

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            handles, self._handles = self._handles, []
            for handle in handles:
                handle.remove()
            self.frames = []

    def _enter(self, entry: int, index: int | None) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            given = kwargs.get("attention_mask")
            if given is None and index is not None and len(args) > index:
                given = args[index]
            mask = given if isinstance(given, Tensor) else None
            continues = bool(self.frames) and self.frames[-1].entry == entry - 1  # the model calling its base
            moved = None
            if continues:
                mask = mask if mask is not None else self.frames[-1].mask
            else:
                model = self._model()
                if model is not None:
                    device = input_device(model)  # read per pass: the model may have moved since
                    moved = _to_device(args, kwargs, device)
                    mask = mask.to(device) if mask is not None else _continuation_mask(args, kwargs, device)
            self.frames.append(_Frame(module, entry, mask))
            return moved

        return hook

    def _leave(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self.frames and self.frames[-1].module is module:
            self.frames.pop()

    @contextmanager
    def replaying(self, mask: Tensor | None) -> Iterator[None]:
        """Treat calls made inside the block (layers replayed one by one) as one pass with ``mask``."""
        frame = _Frame(None, -2, mask)
        self.frames.append(frame)
        try:
            yield
        finally:
            if frame in self.frames:
                self.frames.remove(frame)


def _continuation_mask(args: tuple[Any, ...], kwargs: dict[str, Any], device: torch.device) -> Tensor | None:
    """The mask of a pass given none that continues a KV cache (generate drops an all-ones mask): every
    position real, cached ones included, so hooks can tell where the new tokens sit. None for other passes."""
    past = kwargs.get("past_key_values", kwargs.get("cache"))
    length = getattr(past, "get_seq_length", None)
    seen = length() if callable(length) else 0
    new = kwargs.get("input_ids", args[0] if args else None)
    if new is None:
        new = kwargs.get("inputs_embeds")
    if not isinstance(seen, int) or seen <= 0 or not isinstance(new, Tensor) or new.ndim < 2:
        return None
    return torch.ones(new.shape[0], seen + new.shape[1], dtype=torch.long, device=device)


def _to_device(
    args: tuple[Any, ...], kwargs: dict[str, Any], device: torch.device
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """Inputs moved to ``device`` (the input embedding's), or None when all tensors are already there."""

    def move(value: Any) -> Any:
        return value.to(device) if isinstance(value, Tensor) and value.device != device else value

    new_args, new_kwargs = tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}
    changed = any(a is not b for a, b in zip(new_args, args, strict=True)) or any(
        new_kwargs[k] is not kwargs[k] for k in kwargs
    )
    return (new_args, new_kwargs) if changed else None


_TRACKERS: "weakref.WeakKeyDictionary[nn.Module, _PassTracker]" = weakref.WeakKeyDictionary()


def _tracker(model: nn.Module) -> _PassTracker:
    if model not in _TRACKERS:
        _TRACKERS[model] = _PassTracker(model)
    return _TRACKERS[model]


def replaying(model: nn.Module, attention_mask: Tensor | None) -> AbstractContextManager[None]:
    """Calls to single layers made inside the block belong to one pass with ``attention_mask``.

    Code that replays decoder layers by hand (RMU's frozen replay) uses this, so that the interventions on
    the model see the same mask as in the pass that is being replayed.
    """
    return _tracker(model).replaying(attention_mask) if model in _TRACKERS else nullcontext()


# -- handles --------------------------------------------------------------------------------------------------
class HookHandle:
    """Owns the hooks of one attached intervention. ``remove()`` is idempotent; usable as a context manager
    while attached (entering a removed handle raises: its hooks cannot come back)."""

    def __init__(self, model: nn.Module, handles: list[RemovableHandle], description: str, *, tracked: bool) -> None:
        self._model = weakref.ref(model)
        self._handles = handles
        self._tracked = tracked
        self._entered = False
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
        if handles and self._tracked and model is not None and model in _TRACKERS:
            _TRACKERS[model].release()

    def __enter__(self) -> "HookHandle":
        if not self.active:
            raise HookPointError(
                f"{self.description} was already removed; an attached handle works once. Use the lazy form "
                "(vector.apply(model, ...), ru.Intervention(...)) to enter an intervention many times"
            )
        if self._entered:
            raise HookPointError(f"{self.description} is already inside a with block; its exit will remove it")
        self._entered = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._entered = False
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


@dataclass(frozen=True)
class _Target:
    layer: int
    module: nn.Module
    kind: str  # "pre" or "post"
    where: str  # for messages: "mlp_out of layer 3 (model.layers.3.mlp)"


def _targets(model: nn.Module, layers: int | Iterable[int] | None, point: HookPoint) -> list[_Target]:
    if point in HEAD_POINTS:
        n_heads(model)  # raises now, not when the hooks are attached, if the config does not tell
    found = []
    for layer in resolve_layers(model, layers):
        module, kind = hook_module(model, layer, point)
        found.append(_Target(layer, module, kind, f"{point} of layer {layer} ({module_name(model, module)})"))
    return found


def _width(model: nn.Module) -> int | None:
    try:
        return d_model(model)
    except ArchitectureError:  # a registered custom model without a config: check the rank alone
        return None


def _check_activation(act: Tensor, width: int | None, where: str) -> None:
    if act.ndim != 3 or (width is not None and act.shape[-1] != width):
        expected = "d_model" if width is None else f"d_model={width}"
        raise ShapeError(
            f"{where} gives an activation of shape {tuple(act.shape)}; hook points must give "
            f"[batch pos {expected}]. Register an Architecture whose hook point names a module with that output"
        )


@dataclass(frozen=True)
class _View:
    """How a hook point's tensor is shown to hook functions, and how their replacement is put back.

    Residual points show the tensor as it is, ``[batch pos d_model]``; ``attn_heads`` shows the input of the
    attention output projection ``[batch pos head*d_head]`` as ``[batch pos head d_head]``; ``attn_pattern``
    shows the attention weights ``[batch head query key]`` and takes no replacement (they are already used).
    """

    point: HookPoint
    width: int | None
    heads: int | None

    def show(self, raw: Tensor, where: str) -> Tensor:
        if self.point == "attn_pattern":
            if raw.ndim != 4 or raw.shape[1] != self.heads:
                raise ShapeError(
                    f"{where} gives attention weights of shape {tuple(raw.shape)}; expected [batch head={self.heads} "
                    "query key]"
                )
            return raw
        if self.point == "attn_heads":
            assert self.heads is not None
            if raw.ndim != 3 or raw.shape[-1] % self.heads:
                raise ShapeError(
                    f"{where} receives {tuple(raw.shape)}; expected [batch pos head*d_head] with {self.heads} heads"
                )
            return raw.unflatten(-1, (self.heads, raw.shape[-1] // self.heads))
        _check_activation(raw, self.width, where)
        return raw

    def put_back(self, new: Any, shown: Tensor, raw: Tensor, where: str) -> Tensor:
        if self.point == "attn_pattern":
            raise HookPointError(
                f"a hook at {where} returned a tensor: attention patterns are read-only (the layer has already "
                "used them); to edit what a head writes, hook 'attn_heads'"
            )
        if not isinstance(new, Tensor) or new.shape != shown.shape:
            got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
            raise ShapeError(f"a hook at {where} returned {got}; return None or a tensor of shape {tuple(shown.shape)}")
        # cast back to the activation's dtype and device (a float32 result in a bf16 model)
        return new.to(dtype=raw.dtype, device=raw.device).reshape(raw.shape)


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> tuple[Tensor, Callable[[Tensor], Any]]:
    """A module's input tensor (first positional, else ``hidden_states``/the only tensor keyword), and how to
    rebuild the call's ``(args, kwargs)`` around a replacement."""
    if args and isinstance(args[0], Tensor):
        return args[0], lambda new: ((new, *args[1:]), kwargs)
    names = ["hidden_states"] if isinstance(kwargs.get("hidden_states"), Tensor) else []
    names = names or [k for k, v in kwargs.items() if isinstance(v, Tensor)]
    if len(names) != 1:
        raise HookPointError(f"{where} received no hidden_states tensor (positional or keyword)")
    name = names[0]
    return kwargs[name], lambda new: (args, {**kwargs, name: new})


def _register(model: nn.Module, targets: list[_Target], fn: HookFn, point: HookPoint, label: str) -> HookHandle:
    tracker = _tracker(model)
    view = _View(point, _width(model), n_heads(model) if point in HEAD_POINTS else None)

    def context(layer: int) -> HookContext:
        if tracker.depth == 0 and not tracker.warned:
            tracker.warned = True
            warnings.warn(
                f"a forward pass reached a hook of {type(model).__name__} without entering it or its base model; "
                "the attention mask is unknown, so hooks see attention_mask=None (padding counts as real)",
                stacklevel=4,
            )
        return HookContext(layer, point, tracker.mask)

    def call(raw: Tensor, target: _Target) -> Tensor | None:
        shown = view.show(raw, target.where)
        new = fn(shown, context(target.layer))
        return None if new is None else view.put_back(new, shown, raw, target.where)

    def make_post(target: _Target) -> Callable[[nn.Module, tuple[Any, ...], Any], Any]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            act, rebuild = _unpack(output, target.where)
            new = call(act, target)
            return None if new is None else rebuild(new)

        return hook

    def make_pattern(target: _Target) -> Callable[[nn.Module, tuple[Any, ...], Any], Any]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if not isinstance(weights, Tensor):
                raise HookPointError(
                    f"{target.where} returned no attention weights: patterns exist only with eager attention; load "
                    "the model with attn_implementation='eager' (or call model.set_attn_implementation('eager'))"
                )
            version = weights._version
            call(weights, target)
            if weights._version != version:
                raise HookPointError(
                    f"a hook at {target.where} edited the attention weights in place: patterns are read-only (the "
                    "layer has already used them); to edit what a head writes, hook 'attn_heads'"
                )

        return hook

    def make_pre(target: _Target) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            act, rebuild = _first_tensor(args, kwargs, target.where)
            new = call(act, target)
            return None if new is None else rebuild(new)

        return hook

    handles: list[RemovableHandle] = []
    tracker.acquire(model)
    try:
        for target in targets:
            if target.kind == "pre":
                handles.append(target.module.register_forward_pre_hook(make_pre(target), with_kwargs=True))
            elif point == "attn_pattern":
                handles.append(target.module.register_forward_hook(make_pattern(target)))
            else:
                handles.append(target.module.register_forward_hook(make_post(target)))
    except BaseException:
        for handle in handles:
            handle.remove()
        tracker.release()
        raise
    group = HookHandle(model, handles, f"{label} at {point} of layers {[t.layer for t in targets]}", tracked=True)
    _ACTIVE.setdefault(model, set()).add(group)
    return group


def attach(
    model: nn.Module,
    layers: int | Iterable[int] | None,
    point: HookPoint,
    fn: HookFn,
    *,
    description: str | None = None,
) -> HookHandle:
    """Run ``fn`` at ``point`` of each of ``layers`` from now on; the explicit, handle-returning form.

    Args:
        model: a causal LM of a supported architecture (or its base model).
        layers: layer indices (negative allowed), one index, or ``None`` for every layer.
        point: ``"resid_pre"``, ``"resid_post"``, ``"mlp_out"``, ``"attn_out"`` (``[batch pos d_model]``),
            ``"attn_heads"`` (``[batch pos head d_head]``, each head's output before the output projection mixes
            them) or ``"attn_pattern"`` (``[batch head query key]``, read-only, eager attention only).
        fn: ``fn(activation, ctx) -> replacement | None`` (a replacement of the same shape).
        description: a label for ``repr`` and :func:`active_hooks`.

    Returns:
        A :class:`HookHandle`; ``handle.remove()`` or leaving ``with attach(...):`` removes the hooks, also on
        error. Everything is validated before the first hook is registered, so a bad argument leaves no hook.
    """
    label = description or str(getattr(fn, "__name__", "hook"))
    return _register(model, _targets(model, layers, point), fn, point, label)


# -- lazy interventions -----------------------------------------------------------------------------------------
class Intervention:
    """A reusable, lazy intervention: hooks attached when ``with`` enters it and removed when the block ends.

    Building one validates everything (layers, hook point, sizes) and touches nothing; each ``with`` attaches
    a fresh set of hooks, so the same object can be entered any number of times, handed to a function that
    enters it later, or combined: ``iv_a + iv_b`` (or ``[iv_a, iv_b]`` where an intervention is accepted)
    enters both, in order. Entering an intervention that is already active raises, since it would then act
    twice. :meth:`attach` is the explicit, handle-returning form.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: int | Iterable[int] | None,
        point: HookPoint,
        fn: HookFn,
        *,
        description: str | None = None,
    ) -> None:
        self.model = model
        self._targets = _targets(model, layers, point)
        self.point: HookPoint = point
        self.fn = fn
        self.description = description or str(getattr(fn, "__name__", "hook"))
        self._handle: HookHandle | None = None  # of the running with block
        self._attached: list[HookHandle] = []  # every handle this intervention made, to tell if one is on

    @property
    def layers(self) -> list[int]:
        """The (non-negative) layers this intervention hooks."""
        return [t.layer for t in self._targets]

    @property
    def active(self) -> bool:
        """Whether this intervention's hooks are on the model (a ``with`` block runs, or :meth:`attach`)."""
        self._attached = [h for h in self._attached if h.active]
        return bool(self._attached)

    def attach(self) -> HookHandle:
        """Attach the hooks now and return their :class:`HookHandle` (independent of ``with`` blocks).

        Raises :class:`ConfigError` when they are already on: the intervention would act twice.
        """
        if self.active:
            raise ConfigError(f"{self!r} is already active; attaching it again would apply it twice")
        handle = _register(self.model, self._targets, self.fn, self.point, self.description)
        self._attached.append(handle)
        return handle

    def __enter__(self) -> "Intervention":
        if self.active:
            raise ConfigError(f"{self!r} is already active; entering it again would apply it twice")
        self._handle = self.attach()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.remove()

    def __add__(self, other: "InterventionLike") -> "Interventions":
        return Interventions([self, other])

    def __radd__(self, other: object) -> "Interventions":
        if isinstance(other, int) and other == 0:  # sum([...]) starts from 0
            return Interventions([self])
        return Interventions([other, self])  # type: ignore[list-item]

    def __repr__(self) -> str:
        state = "active" if self.active else "not attached"
        return f"Intervention({self.description} at {self.point} of layers {self.layers}, {state})"


class Interventions:
    """Several interventions entered together, in order (and left in reverse order), as one."""

    def __init__(self, items: Iterable["InterventionLike"]) -> None:
        flat: list[AbstractContextManager[Any]] = []  # Interventions flattened into their items
        for item in items:
            if isinstance(item, Interventions):
                flat.extend(item.items)
            elif isinstance(item, AbstractContextManager):
                flat.append(item)
            else:
                raise ConfigError(
                    f"cannot compose a {type(item).__name__}; interventions are context managers such as "
                    "vector.apply(model, coeff) or ru.ablate_direction(model, r, layers)"
                )
        self.items: list[AbstractContextManager[Any]] = flat
        self._stack: ExitStack | None = None

    def __enter__(self) -> "Interventions":
        if self._stack is not None:
            raise ConfigError("these interventions are already active; entering them again would apply them twice")
        with ExitStack() as stack:
            for item in self.items:
                stack.enter_context(item)
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.__exit__(exc_type, exc, tb)

    def __add__(self, other: "InterventionLike") -> "Interventions":
        return Interventions([self, other])

    def __radd__(self, other: object) -> "Interventions":
        if isinstance(other, int) and other == 0:  # sum([...]) starts from 0
            return self
        return Interventions([other, self])  # type: ignore[list-item]

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"Interventions({self.items!r})"


InterventionLike = AbstractContextManager[Any] | Interventions | Sequence[AbstractContextManager[Any]]


def _within(a: nn.Module, b: nn.Module) -> bool:
    """Whether one of the two modules is (part of) the other: a model and its base model are one network."""
    return a is b or any(m is a for m in b.modules()) or any(m is b for m in a.modules())


def _models_of(value: Any) -> list[nn.Module]:
    if isinstance(value, Intervention):
        return [value.model]
    if isinstance(value, HookHandle):
        model = value._model()
        return [model] if model is not None else []
    if isinstance(value, Interventions):
        return [m for item in value.items for m in _models_of(item)]
    return []


def as_intervention(value: InterventionLike | None, model: nn.Module | None = None) -> AbstractContextManager[Any]:
    """One context manager for what a user may pass as ``intervention=``: None, one, or a list of them.

    With ``model``, an intervention of this package built for another model is refused: its hooks would sit
    on a network the evaluation never runs, and the numbers would silently be those of no intervention.
    """
    if value is None:
        return nullcontext()
    if isinstance(value, (list, tuple)):
        value = Interventions(value)
    if not isinstance(value, (AbstractContextManager, Interventions)):
        raise ConfigError(
            "intervention= takes a context manager (vector.apply(model, coeff), ru.ablate_direction(...)) or a "
            f"list of them, got {type(value).__name__}"
        )
    if model is not None:
        for other in _models_of(value):
            if not _within(other, model):
                raise ConfigError(
                    f"intervention= was built for another model ({type(other).__name__} at {id(other):#x}), not "
                    f"the {type(model).__name__} being evaluated; build it with this model: vector.apply(model, c)"
                )
    return value


# -- replaying layers ---------------------------------------------------------------------------------------------
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

    def with_hidden_states(self, hidden: Tensor | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` for calling the layer again on other hidden states."""
        if self.args:
            return (hidden, *self.args[1:]), self.kwargs
        return self.args, {**self.kwargs, "hidden_states": hidden}

    def kept(self, *, with_hidden_states: bool) -> "LayerCall":
        """A copy to keep beyond the pass: tensors detached (so no graph stays alive), and the hidden states
        kept only when asked (a replay recomputes those of every layer but the first)."""

        def detach(value: Any) -> Any:
            if isinstance(value, Tensor):
                return value.detach()
            if isinstance(value, tuple):
                return tuple(detach(v) for v in value)
            return value

        hidden = self.hidden_states.detach().clone() if with_hidden_states else None  # never edited in place
        args, kwargs = self.with_hidden_states(hidden)
        return LayerCall(detach(args), {k: detach(v) for k, v in kwargs.items()})

    def tensors(self) -> list[Tensor]:
        """Every tensor the call holds (inside tuples too)."""
        found: list[Tensor] = []

        def walk(value: Any) -> None:
            if isinstance(value, Tensor):
                found.append(value)
            elif isinstance(value, (tuple, list)):
                for item in value:
                    walk(item)

        walk(self.args)
        walk(list(self.kwargs.values()))
        return found


def capture_calls(model: nn.Module, layers: int | Iterable[int] | None) -> tuple[HookHandle, dict[int, LayerCall]]:
    """Keep the arguments (masks, position embeddings, ...) each of ``layers`` is called with.

    Replaying a stretch of layers from a cached residual stream needs exactly these, and they differ by
    architecture and even by layer (Gemma2's sliding-window layers get their own mask). The capture runs
    before every other pre-hook of the layer, so it keeps what the layer was *given*, before any
    ``resid_pre`` intervention edited it: a replay through the layer applies that intervention once more,
    exactly as the pass did.
    """
    indices = resolve_layers(model, layers)
    calls: dict[int, LayerCall] = {}
    handles = []
    for layer in indices:
        module, _ = hook_module(model, layer, "resid_pre")

        def keep(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], layer: int = layer) -> None:
            calls[layer] = LayerCall(args, dict(kwargs))

        handles.append(module.register_forward_pre_hook(keep, with_kwargs=True, prepend=True))
    group = HookHandle(model, handles, f"capture_calls of layers {indices}", tracked=False)
    _ACTIVE.setdefault(model, set()).add(group)
    return group, calls


__all__ = [
    "HookContext",
    "HookFn",
    "HookHandle",
    "Intervention",
    "InterventionLike",
    "Interventions",
    "LayerCall",
    "active_hooks",
    "as_intervention",
    "attach",
    "capture_calls",
    "remove_hooks",
    "replaying",
]
