"""Control vectors: one direction per layer, with algebra, steering, directional ablation and safetensors I/O."""

import math
import numbers
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, SupportsFloat

import einops
import torch
from torch import Tensor, nn

from ._cache import collect_pooled
from ._hooks import HookContext, HookHandle, Intervention
from ._io import load_tensors, save_tensors
from ._models import HEAD_POINTS, RESIDUAL_POINTS, ResidualPoint, d_model, input_device, resolve_layer, resolve_layers
from ._positions import Positions, check_positions, position_mask
from ._typing import Activations, Direction
from .data import tokenize_batches
from .errors import ConfigError, FormatError, HookPointError, LayerNotFoundError, ShapeError

_KIND = "control_vector"
RMU_KIND = "rmu_control_vectors"  # RMU's targets: keys "0".."T-1", unit vectors at the steered layer


def _check_direction(layer: int | str, vector: Any) -> Tensor:
    if not isinstance(vector, Tensor) or vector.ndim != 1 or not vector.is_floating_point():
        got = f"shape {tuple(vector.shape)} {vector.dtype}" if isinstance(vector, Tensor) else type(vector).__name__
        raise ShapeError(f"direction for layer {layer} must be a 1-D float tensor of size d_model, got {got}")
    if not bool(torch.isfinite(vector).all()):
        raise ShapeError(f"direction for layer {layer} holds NaN or infinite values")
    return vector


def _layer_key(key: Any) -> int:
    """A layer key as an int; floats, bools and strings are refused rather than silently truncated."""
    if isinstance(key, bool) or not isinstance(key, (int, numbers.Integral)):
        raise LayerNotFoundError(f"layer keys must be ints (negative allowed), got {key!r}")
    return int(key)


def _unit(layer: int | str, vector: Tensor) -> Tensor:
    norm = vector.float().norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ShapeError(f"direction for layer {layer} has norm {float(norm)}; a direction must be finite and non-zero")
    return vector / norm.to(vector.dtype)


def _scalar(value: Any) -> float:
    """A finite real scalar (Python, numpy scalar or 0-d array, 0-d tensor) as a float; anything else is refused."""
    number: float | None = None
    if isinstance(value, Tensor) and value.ndim == 0 and not value.is_complex() and value.dtype != torch.bool:
        number = float(value)
    elif getattr(value, "ndim", None) == 0 and getattr(value, "dtype", None) is not None and hasattr(value, "item"):
        item = value.item()  # a 0-d numpy array
        number = float(item) if isinstance(item, numbers.Real) and not isinstance(item, bool) else None
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    if number is None:
        got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else repr(value)
        raise TypeError(f"a ControlVector can be scaled by a real scalar (int, float, numpy or 0-d tensor), not {got}")
    if not math.isfinite(number):
        raise ConfigError(f"a steering coefficient must be finite, got {number}")
    return number


def _check_point(point: object) -> None:
    if point in HEAD_POINTS:
        raise HookPointError(
            f"directions live in the residual stream [batch pos d_model], not at {point!r}; use one of "
            f"{', '.join(RESIDUAL_POINTS)} (for heads: ru.ablate_heads, ru.patch(..., heads=), ru.Intervention)"
        )
    if point not in RESIDUAL_POINTS:
        raise HookPointError(f"unknown hook point {point!r}; valid: {', '.join(RESIDUAL_POINTS)}")


class ControlVector:
    """A direction per layer, added to (or projected out of) the residual stream at those layers.

    ``ControlVector({5: v5, 6: v6})``; layers may be negative (resolved against the model on use).
    """

    def __init__(
        self,
        directions: Mapping[int, Tensor],
        *,
        point: ResidualPoint = "resid_post",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not directions:
            raise ConfigError("a ControlVector needs at least one layer")
        _check_point(point)
        # copies: a later in-place edit of the caller's tensor must not change a vector (or its interventions)
        checked = {_layer_key(layer): _check_direction(layer, v).detach().clone() for layer, v in directions.items()}
        sizes = {v.shape[0] for v in checked.values()}
        if len(sizes) > 1:
            raise ShapeError(f"directions have different sizes {sorted(sizes)}; all must be d_model")
        self.directions: dict[int, Tensor] = dict(sorted(checked.items()))
        self.point: ResidualPoint = point
        self.metadata: dict[str, Any] = dict(metadata or {})

    @property
    def layers(self) -> list[int]:
        """Layer indices, ascending."""
        return list(self.directions)

    @property
    def d_model(self) -> int:
        """Size of each direction."""
        return next(iter(self.directions.values())).shape[0]

    def __getitem__(self, layer: int) -> Direction:
        return self.directions[layer]

    def __iter__(self) -> Iterator[int]:
        return iter(self.directions)

    def __len__(self) -> int:
        return len(self.directions)

    def items(self) -> Iterable[tuple[int, Tensor]]:
        """``(layer, direction)`` pairs."""
        return self.directions.items()

    # -- algebra -------------------------------------------------------------------------------------------
    def _combine(self, other: "ControlVector", sign: float) -> "ControlVector":
        if not isinstance(other, ControlVector):
            return NotImplemented
        if other.point != self.point or other.d_model != self.d_model:
            raise ShapeError(
                f"cannot combine vectors at {self.point!r}/d_model {self.d_model} and "
                f"{other.point!r}/d_model {other.d_model}"
            )
        out = dict(self.directions)
        for layer, v in other.items():
            out[layer] = out[layer] + sign * v if layer in out else sign * v
        return ControlVector(out, point=self.point, metadata=self.metadata)

    def __add__(self, other: "ControlVector") -> "ControlVector":
        return self._combine(other, 1.0)

    def __sub__(self, other: "ControlVector") -> "ControlVector":
        return self._combine(other, -1.0)

    # numpy must not treat a vector as a sequence of layers: ``np.float32(2) * v`` calls ``v.__rmul__``
    __array_ufunc__ = None

    def __mul__(self, scalar: Any) -> "ControlVector":
        factor = _scalar(scalar)
        return ControlVector({k: v * factor for k, v in self.items()}, point=self.point, metadata=self.metadata)

    __rmul__ = __mul__

    def __truediv__(self, scalar: Any) -> "ControlVector":
        factor = _scalar(scalar)
        if factor == 0:
            raise ZeroDivisionError("a ControlVector divided by zero")
        return self * (1.0 / factor)

    def __neg__(self) -> "ControlVector":
        return self * -1.0

    def normalized(self) -> "ControlVector":
        """Each layer's direction scaled to unit norm (a zero direction is refused: it has none)."""
        return ControlVector({k: _unit(k, v) for k, v in self.items()}, point=self.point, metadata=self.metadata)

    def norms(self) -> dict[int, float]:
        """L2 norm per layer."""
        return {k: float(v.norm()) for k, v in self.items()}

    # -- interventions -------------------------------------------------------------------------------------
    def resolved(self, model: nn.Module, layers: Iterable[int] | None = None) -> dict[int, list[Tensor]]:
        """The directions per non-negative layer of ``model``: negative keys resolved against it.

        Two keys that name the same layer of this model (``-1`` and ``5`` on a 6-layer model) both stay, in
        key order; steering adds them both, ablation projects out the span of both.
        """
        width = d_model(model)
        if self.d_model != width:
            raise ShapeError(f"control vector has size {self.d_model} but the model's d_model is {width}")
        if layers is None:
            chosen = self.layers
        else:
            wanted = set(resolve_layers(model, layers))
            chosen = [k for k in self.layers if resolve_layer(model, k) in wanted]
            missing = sorted(wanted - {resolve_layer(model, k) for k in chosen})
            if missing:
                raise ConfigError(f"layer(s) {missing} have no direction in this vector; it has layers {self.layers}")
        out: dict[int, list[Tensor]] = {}
        for key in chosen:
            out.setdefault(resolve_layer(model, key), []).append(self.directions[key])
        return dict(sorted(out.items()))

    def apply(
        self,
        model: nn.Module,
        coeff: SupportsFloat = 1.0,
        *,
        layers: Iterable[int] | None = None,
        positions: Positions = "all",
        only_non_pad: bool = False,
    ) -> Intervention:
        """Steering as a lazy, reusable intervention: ``with vector.apply(model, coeff):``.

        Args:
            model: the model to steer; nothing is hooked until a ``with`` block enters the result.
            coeff: the scale of each layer's direction (any real scalar).
            layers: a subset of this vector's layers (default: all of them).
            positions: where to add it: ``"all"``, ``"non-pad"`` (per the pass's attention mask), ``"last"``
                (each row's last real token), an int k (positions k on), a slice, or a bool mask ``[pos]`` or
                ``[batch pos]``.
            only_non_pad: the same as ``positions="non-pad"`` (kept for existing code).

        Returns:
            An :class:`~repe_unlearn.Intervention` adding ``coeff * v[layer]`` at this vector's hook point of
            each layer while a ``with`` block runs; it may be entered again, composed with ``+``, or passed as
            ``intervention=`` to the evaluation.
        """
        factor = _scalar(coeff)
        where = _where(positions, only_non_pad)
        directions = {layer: sum(vs[1:], vs[0]) for layer, vs in self.resolved(model, layers).items()}

        def steer(act: Activations, ctx: HookContext) -> Activations:
            delta = factor * directions[ctx.layer].to(device=act.device, dtype=act.dtype)
            if isinstance(where, str) and where == "all":
                return act + delta
            keep = position_mask(where, act, ctx.attention_mask)
            return torch.where(keep[..., None], act + delta, act)

        return Intervention(model, list(directions), self.point, steer, description=f"steer(coeff={factor:g})")

    def attach(
        self,
        model: nn.Module,
        coeff: SupportsFloat = 1.0,
        *,
        layers: Iterable[int] | None = None,
        positions: Positions = "all",
        only_non_pad: bool = False,
    ) -> HookHandle:
        """Steer from now on (the explicit form of :meth:`apply`); returns the :class:`HookHandle` to remove."""
        return self.apply(model, coeff, layers=layers, positions=positions, only_non_pad=only_non_pad).attach()

    def ablate(
        self, model: nn.Module, *, layers: Iterable[int] | None = None, positions: Positions = "all"
    ) -> Intervention:
        """Directional ablation as a lazy intervention: project each layer's direction out of that layer.

        ``positions`` selects where, as in :meth:`apply`.

        Returns:
            An :class:`~repe_unlearn.Intervention` replacing ``h`` by ``h - (h·r̂) r̂`` at each layer while a
            ``with`` block runs (zero directions are refused).
        """
        check_positions(positions)
        bases = {layer: _basis(layer, vs) for layer, vs in self.resolved(model, layers).items()}
        return Intervention(model, list(bases), self.point, _projector(bases, positions), description="ablate")

    # -- files ---------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write to a safetensors file (``layers.<i>`` tensors; point and metadata as JSON in the header)."""
        meta = {**self.metadata, "kind": _KIND, "point": self.point}
        save_tensors(path, {f"layers.{k}": v for k, v in self.items()}, meta, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, topic: int = 0, layer: int | None = None) -> "ControlVector":
        """Read any vector file the package writes: one written by :meth:`save` (``from_contrastive`` results,
        probe directions, combinations), or RMU's ``control_vectors.safetensors``.

        From an RMU file: forget topic ``topic``'s unit direction u at the steered layer, with RMU's coefficient
        c in ``metadata["coefficient"]`` (so ``vector.apply(model, vector.metadata["coefficient"])`` adds the
        target c·u). The layer is the file's; for files written before it was recorded, the ``rmu_config.json``
        beside the file, or ``layer``."""
        tensors, meta = load_tensors(path, kind=(_KIND, RMU_KIND))
        if meta["kind"] == RMU_KIND:
            return cls._from_rmu(path, tensors, meta, topic, layer)
        try:
            directions = {int(key.removeprefix("layers.")): v for key, v in tensors.items()}
        except ValueError:
            raise ShapeError(f"{path}: tensor names must be 'layers.<int>', got {sorted(tensors)}") from None
        point = meta.pop("point", "resid_post")
        meta.pop("kind")
        return cls(directions, point=point, metadata=meta)

    @classmethod
    def _from_rmu(
        cls,
        path: str | os.PathLike[str],
        tensors: dict[str, Tensor],
        meta: dict[str, Any],
        topic: int,
        layer: int | None,
    ) -> "ControlVector":
        if str(topic) not in tensors:
            raise ConfigError(f"{path} holds RMU topics {sorted(tensors, key=int)}; there is no topic {topic}")
        recorded = meta.get("layer")
        beside = Path(path).parent / "rmu_config.json"
        if recorded is None and beside.is_file():
            import json

            try:
                recorded = json.loads(beside.read_text(encoding="utf-8"))["config"]["layer"]
            except (ValueError, KeyError, TypeError):
                raise FormatError(f"{beside} is not an rmu_config.json written by repe-unlearn") from None
        if recorded is not None and layer is not None and int(recorded) != layer:
            raise ConfigError(f"{path} was steered at layer {recorded}, not {layer}")
        steered = int(recorded) if recorded is not None else layer
        if steered is None:
            raise ConfigError(f"{path} does not say its steered layer and no rmu_config.json is beside it; pass layer=")
        coefficients = meta.get("coefficients") or []
        metadata: dict[str, Any] = {"source": "rmu", "topic": topic, "file": os.fspath(path)}
        if topic < len(coefficients):
            metadata["coefficient"] = float(coefficients[topic])
        return cls({steered: tensors[str(topic)].float()}, metadata=metadata)

    def _repr_html_(self) -> str:
        """A table per layer for notebooks: norm and the first values of each direction."""
        rows = "".join(
            f"<tr><td>{layer}</td><td>{float(v.norm()):.4g}</td>"
            f"<td><code>{[round(x, 3) for x in v[:4].tolist()]} ...</code></td></tr>"
            for layer, v in self.items()
        )
        meta = ", ".join(f"{k}={v}" for k, v in self.metadata.items())
        return (
            f"<b>ControlVector</b> at <code>{self.point}</code>, d_model {self.d_model}"
            + (f" ({meta})" if meta else "")
            + f"<table><tr><th>layer</th><th>norm</th><th>values</th></tr>{rows}</table>"
        )

    def __repr__(self) -> str:
        norms = ", ".join(f"{k}: {n:.3g}" for k, n in self.norms().items())
        return f"ControlVector(point={self.point!r}, d_model={self.d_model}, norms={{{norms}}})"

    # -- construction --------------------------------------------------------------------------------------
    @classmethod
    def from_contrastive(
        cls,
        model: nn.Module,
        tokenizer: Any,
        positive: Sequence[str],
        negative: Sequence[str],
        layers: int | Iterable[int] | None = None,
        *,
        method: Literal["mean_diff", "pca"] = "mean_diff",
        point: ResidualPoint = "resid_post",
        batch_size: int = 16,
        pool: Literal["last", "mean"] = "last",
        max_length: int = 512,
    ) -> "ControlVector":
        """A vector from contrastive prompt pairs, read through :func:`repe_unlearn.record`.

        Args:
            model: a causal LM of a supported architecture.
            tokenizer: its tokenizer.
            positive: prompts showing the concept.
            negative: as many prompts without it, paired with ``positive``.
            layers: layer indices, one index, or ``None`` for every layer.
            method: ``mean_diff`` (mean of positive minus mean of negative pooled activations) or ``pca``
                (the first principal direction of the paired differences, uncentred, signed and scaled so
                that its length is the mean projection of the differences onto it).
            point: the hook point read and later steered.
            batch_size: prompts per forward pass.
            pool: ``"last"`` non-pad token or ``"mean"`` over non-pad tokens.
            max_length: tokens per prompt; longer prompts are cut, so memory is bounded by
                ``batch_size × max_length`` whatever the prompts' lengths.

        Returns:
            A :class:`ControlVector` ``{layer: [d_model]}`` with the method and pooling in its metadata.
        """
        if len(positive) != len(negative) or not positive:
            n_pos, n_neg = len(positive), len(negative)
            raise ConfigError(
                f"need equally many positive and negative prompts (at least one), got {n_pos} and {n_neg}"
            )
        if method not in ("mean_diff", "pca"):
            raise ConfigError(f"unknown method {method!r}; valid: mean_diff, pca")
        device = input_device(model)
        acts = {}
        for name, texts in (("positive", positive), ("negative", negative)):
            batches = tokenize_batches(tokenizer, texts, batch_size, max_length=max_length, device=device)
            acts[name] = collect_pooled(model, batches, layers, point, pool=pool)
        directions = {}
        for layer, pos in acts["positive"].items():
            diffs = (pos - acts["negative"][layer]).float()
            directions[layer] = diffs.mean(0) if method == "mean_diff" else _principal(diffs)
        flat = [layer for layer, v in directions.items() if float(v.norm()) == 0.0]
        if flat:
            warnings.warn(
                f"the contrastive vector is zero at layer(s) {flat}: positive and negative prompts give the same "
                "activations there, so steering with it does nothing",
                stacklevel=2,
            )
        meta = {"method": method, "pool": pool, "n_pairs": len(positive), "model": type(model).__name__}
        return cls(directions, point=point, metadata=meta)


def _principal(diffs: Tensor) -> Tensor:
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    top = vh[0]
    scale = (diffs @ top).mean()
    return top * scale  # the sign of scale orients it along the mean difference


def _basis(layer: int, vectors: Sequence[Tensor]) -> Tensor:
    """``[k d_model]`` orthonormal rows spanning ``vectors`` (one unit vector when there is one)."""
    units = [_unit(layer, v.float()) for v in vectors]
    if len(units) == 1:
        return units[0][None]
    q, r = torch.linalg.qr(torch.stack(units).T)
    return q[:, r.diagonal().abs() > 1e-6].T


def _where(positions: Positions, only_non_pad: bool) -> Positions:
    if only_non_pad and not (isinstance(positions, str) and positions in ("all", "non-pad")):
        raise ConfigError("give positions= or only_non_pad=True, not both")
    where: Positions = "non-pad" if only_non_pad else positions
    check_positions(where)
    return where


def _projector(bases: Mapping[int, Tensor], positions: Positions = "all") -> Any:
    def project_out(act: Activations, ctx: HookContext) -> Activations:
        basis = bases[ctx.layer].to(device=act.device, dtype=act.dtype)
        along = einops.einsum(act, basis, "batch pos d_model, k d_model -> batch pos k")
        projected = act - einops.einsum(along, basis, "batch pos k, k d_model -> batch pos d_model")
        if isinstance(positions, str) and positions == "all":
            return projected
        return torch.where(position_mask(positions, act, ctx.attention_mask)[..., None], projected, act)

    return project_out


def ablate_direction(
    model: nn.Module,
    direction: Direction,
    layers: int | Iterable[int] | None,
    *,
    point: ResidualPoint = "resid_post",
    positions: Positions = "all",
) -> Intervention:
    """Project one direction out of ``point`` at each of ``layers`` (e.g. the steered layer and all after).

    Args:
        model: the model; nothing is hooked until a ``with`` block enters the result.
        direction: ``[d_model]``, finite and non-zero (its length does not matter).
        layers: layer indices (negative allowed), one index, or ``None`` for every layer.
        point: the hook point (``resid_post`` by default).
        positions: where to project it out, as in :meth:`ControlVector.apply` (default: every position).

    Returns:
        A lazy, reusable :class:`~repe_unlearn.Intervention`.
    """
    check_positions(positions)
    direction = _check_direction("(ablate_direction)", direction)
    width = d_model(model)
    if direction.shape[0] != width:
        raise ShapeError(f"direction has size {direction.shape[0]} but the model's d_model is {width}")
    _check_point(point)
    indices = resolve_layers(model, layers)
    basis = _unit("(ablate_direction)", direction.float())[None]
    projector = _projector(dict.fromkeys(indices, basis), positions)
    return Intervention(model, indices, point, projector, description="ablate")
