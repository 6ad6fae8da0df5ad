"""The RMU optimizer: only the selected tensors train; no second model; forward passes stop at layer ℓ.

Per step, for topic t = step mod T and batch b = step div T:

    forget_loss = MSE(h_ℓ(x_forget), c_t · u_t)
    retain_loss = α_t · MSE(h_ℓ(x_retain), h_ℓ^frozen(x_retain))

and one AdamW step (eps 1e-6, no weight decay) on the selected tensors. The two losses are backpropagated
one after the other, so only one graph is alive at a time; the gradients add up to those of the sum.

The frozen activations come from replaying only layers first_update..ℓ with frozen copies of the selected
tensors swapped in, starting from the residual stream the updated pass already computed below the first
updated layer (those layers never change, so the prefix is shared). By default both losses average over
non-pad positions only; ``reference_mode`` averages over every position, padding included, as the published code does.

Other methods (``config.method``) change the forget loss alone: ``rmu-lat`` and ``adv-rmu`` take it under a
latent adversary fitted on each forget batch (:mod:`.adversary`) and make ``adv_model_steps`` updates with it;
``rmu-flat`` aims the forget activations at c·u plus the frozen model's mean forget activation with its u part
removed, with an extra weight ``flat_weight`` on the error off u: ablating u (or the mean shift) then leaves
nearly the same vector for every forget token, which tells the later layers nothing about the entity.
"""

import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from .._cache import collect
from .._checkpoint import partial_layers
from .._distributed import all_reduce_sum, is_main, my_rows, world
from .._hooks import HookHandle, LayerCall, _unpack, capture_calls, replaying
from .._masking import mean_token_norm, real_positions
from .._models import d_model, decoder_layers, find_layers_path, input_device, mlp_down_proj, n_layers, parameter_name
from .._vectors import ControlVector
from ..data import pad_id, tokenize_batches
from ..errors import ConfigError, DataError, TrainingError
from .adversary import LatentAdversary, fit_adversary
from .config import ADVERSARIAL, RMUConfig
from .epoch_cache import EpochCache, available_bytes, no_dropout
from .optim import make_optimizer
from .targets import directions_from, published_directions, random_directions

Batch = Mapping[str, Tensor]


@dataclass(frozen=True)
class StepLog:
    """What one step did (``retain_loss`` is after α)."""

    step: int
    topic: int
    forget_loss: float
    retain_loss: float
    loss: float
    step_seconds: float
    forget_norm: float  # mean per-token norm of the updated h_ℓ on the forget batch
    retain_norm: float
    cached: bool = False  # both batches ran from the epoch cache (layers first..ℓ only)
    adversary_loss: float | None = None  # rmu-lat/adv-rmu: the adversary's loss after its last step

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class RMUResult:
    """The outcome of :func:`unlearn`: what was trained, towards what, and how the losses went."""

    config: RMUConfig
    parameter_names: list[str]
    directions: Tensor  # [topic d_model] unit vectors u_t
    coefficients: list[float]  # c_t actually used
    frozen_norms: list[float]  # mean per-token norm of the frozen h_ℓ on each topic's first forget batch
    history: list[StepLog] = field(default_factory=list)
    original: dict[str, Tensor] = field(default_factory=dict, repr=False)  # the selected tensors before

    def control_vector(self, topic: int = 0) -> ControlVector:
        """Forget topic ``topic``'s target as a steering vector: the unit direction u at the steered layer,
        with the coefficient c in ``metadata["coefficient"]`` (``.apply(model, c)`` adds RMU's target c·u)."""
        if not 0 <= topic < len(self.directions):
            raise ConfigError(f"this run has {len(self.directions)} forget topic(s); there is no topic {topic}")
        metadata = {"source": "rmu", "topic": topic, "coefficient": float(self.coefficients[topic])}
        return ControlVector({self.config.layer: self.directions[topic]}, metadata=metadata)

    def _repr_html_(self) -> str:
        """Summary and loss table for notebooks."""
        first, last = (self.history[0], self.history[-1]) if self.history else (None, None)
        rows = "".join(
            f"<tr><td>{label}</td><td>{log.forget_loss:.4g}</td><td>{log.retain_loss:.4g}</td>"
            f"<td>{log.forget_norm:.4g}</td><td>{log.retain_norm:.4g}</td></tr>"
            for label, log in (("first step", first), ("last step", last))
            if log is not None
        )
        coeffs = ", ".join(f"{c:.4g}" for c in self.coefficients)
        norms = ", ".join(f"{n:.4g}" for n in self.frozen_norms)
        return (
            f"<b>RMUResult</b>: {len(self.history)} steps, steered layer {self.config.layer}, updated "
            f"<code>{', '.join(self.parameter_names)}</code><br>c = {coeffs} (frozen norm at ℓ: {norms})"
            "<table><tr><th></th><th>forget loss</th><th>retain loss</th><th>forget norm</th><th>retain norm</th></tr>"
            + rows
            + "</table>"
        )

    def __repr__(self) -> str:
        last = self.history[-1] if self.history else None
        losses = f", last forget {last.forget_loss:.4g}, retain {last.retain_loss:.4g}" if last else ""
        coeffs = ", ".join(f"{c:.4g}" for c in self.coefficients)
        return f"RMUResult({len(self.history)} steps, layer {self.config.layer}, c=[{coeffs}]{losses})"


def model_depth(model: nn.Module) -> int:
    """The decoder layers of the checkpoint ``model`` was built from (all of them, where only the first were
    loaded): what a layer counted from the last is counted from."""
    partial = partial_layers(model)
    return partial[1] if partial is not None else n_layers(model)


def parameter_names(model: nn.Module, config: RMUConfig) -> list[str]:
    """Full names of the tensors RMU updates, by name (never by position)."""
    config = config.resolved(model_depth(model))
    if config.layer >= n_layers(model):
        raise ConfigError(f"layer {config.layer} is out of range: the model has {n_layers(model)} layers")
    names = dict(model.named_parameters())
    chosen = []
    for layer in config.layers_to_update:
        if config.param_template is None:
            name = parameter_name(model, mlp_down_proj(model, layer))
        else:
            name = config.param_template.format(layer=layer)
        if name not in names:
            close = [n for n in names if f".{layer}." in n][:6]
            raise ConfigError(f"the model has no parameter {name!r}; parameters of layer {layer} include {close}")
        chosen.append(name)
    return chosen


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor | None, *, denominator: float | None = None) -> Tensor:
    """Mean squared error over the positions where ``mask`` is 1 (all positions when ``mask`` is None).

    ``denominator`` replaces the number of averaged values: a rank holding a shard of a global batch divides
    by the global batch's count, so that the shards' losses add up to the global loss.
    """
    if mask is None and denominator is None:  # as the published code computes it (bit for bit in bf16 too)
        return F.mse_loss(pred, target.expand_as(pred))
    squared = (pred - target).square()
    if mask is None:
        return squared.sum() / float(denominator or squared.numel())
    keep = real_positions(mask, pred, pred.dtype)[..., None]
    count = (keep.sum() * pred.shape[-1]).clamp(min=1) if denominator is None else denominator
    return (squared * keep).sum() / count


def make_batches(texts: Sequence[str], config: RMUConfig, *, name: str, shuffle_seed: int = 0) -> list[list[str]]:
    """Consecutive batches of ``batch_size`` texts, texts shorter than ``min_len`` characters dropped
    (in reference mode, as published, a text is kept when ``len(text) > min_len``)."""
    if config.reference_mode:
        kept = [t for t in texts if len(t) > config.min_len]
    else:
        kept = [t for t in texts if len(t) >= config.min_len]
    if not kept:
        relation = "more than" if config.reference_mode else "at least"
        raise DataError(f"{name} has no text of {relation} {config.min_len} characters")
    if config.shuffle:
        random.Random(config.seed + shuffle_seed).shuffle(kept)
    return [kept[i : i + config.batch_size] for i in range(0, len(kept), config.batch_size)]


def schedule(n_topics: int, lengths: Sequence[int], max_batches: int, epochs: int = 1) -> list[tuple[int, int]]:
    """``(topic, batch)`` for each step: topic = step mod T, batch = step div T, as in the published loop;
    the whole epoch repeats ``epochs`` times."""
    n_steps = min(max_batches, *lengths)
    return [(step % n_topics, step // n_topics) for step in range(n_steps)] * epochs


class _FrozenReplay:
    """Computes the frozen model's h_ℓ from a captured pass without a second model.

    :meth:`capturing` keeps the arguments layers first..ℓ are called with during the updated pass; calling
    the replay then runs those layers again from the captured input of the first updated layer, with frozen
    copies of the selected tensors swapped in. Interventions on the model act in the replay as in the pass,
    each exactly once: the capture keeps the first layer's input from *before* any ``resid_pre`` hook, and the
    replay runs inside the pass's attention mask.
    """

    def __init__(
        self, model: nn.Module, names: list[str], first: int, layer: int, frozen: Mapping[str, Tensor] | None = None
    ) -> None:
        self.model = model
        self.layers = decoder_layers(model)
        self.first, self.layer = first, layer
        prefix = find_layers_path(model)
        params = dict(model.named_parameters())
        self.frozen: dict[int, dict[str, Tensor]] = {}
        for name in names:
            index_str, _, local = name.removeprefix(prefix + ".").partition(".")
            if not name.startswith(prefix + ".") or not index_str.isdigit():
                raise ConfigError(f"{name} is not a parameter of a decoder layer ({prefix}.<i>.<name>)")
            index = int(index_str)
            if not first <= index <= layer:
                raise ConfigError(f"{name} lies in layer {index}, outside the updated range {first}..{layer}")
            # the frozen copies: given (the run's own copies of the original values), or cloned here
            copy = frozen[name] if frozen is not None else params[name].detach().clone()
            self.frozen.setdefault(index, {})[local] = copy

    def capturing(self) -> tuple[HookHandle, dict[int, LayerCall]]:
        """A handle to hold around the updated pass, and the calls it fills in."""
        return capture_calls(self.model, range(self.first, self.layer + 1))

    def __call__(self, calls: Mapping[int, LayerCall], attention_mask: Tensor | None) -> Tensor:
        """The frozen model's h_ℓ (in eval mode, as the published loop's frozen copy is)."""
        modes = [(m, m.training) for layer in self.layers[self.first : self.layer + 1] for m in layer.modules()]
        try:
            for module, _ in modes:
                module.training = False
            return self.run(calls, attention_mask, frozen=True)
        finally:
            for module, mode in modes:
                module.training = mode

    def run(self, calls: Mapping[int, LayerCall], attention_mask: Tensor | None, *, frozen: bool) -> Tensor:
        """Layers first..ℓ from the first one's captured input: with the frozen copies of the selected
        tensors (``frozen=True``), or with the live ones, as the updated pass computes them."""
        hidden = calls[self.first].hidden_states
        with replaying(self.model, attention_mask):
            for index in range(self.first, self.layer + 1):
                args, kwargs = calls[index].with_hidden_states(hidden)
                if frozen and index in self.frozen:
                    out = functional_call(self.layers[index], self.frozen[index], args, kwargs)
                else:
                    out = self.layers[index](*args, **kwargs)
                hidden = _unpack(out, f"decoder layer {index}")[0]
        return hidden


def train(
    model: nn.Module,
    forget: Sequence[Sequence[Batch]],
    retain: Sequence[Sequence[Batch]],
    config: RMUConfig,
    *,
    directions: Tensor | None = None,
    progress: bool = True,
    on_step: Callable[[StepLog], None] | None = None,
) -> RMUResult:
    """Run RMU on tokenized batches (one list per forget corpus and its retain corpus); edits ``model``.

    On failure (a NaN or infinite loss, an interrupt) the selected tensors are restored, so the model is
    left as it was.
    """
    config = config.resolved(model_depth(model))
    n_topics = len(forget)
    if n_topics == 0 or len(retain) != n_topics:
        raise ConfigError(f"need one retain corpus per forget corpus, got {n_topics} forget and {len(retain)} retain")
    names = parameter_names(model, config)
    params = dict(model.named_parameters())
    selected = {name: params[name] for name in names}
    width = d_model(model)
    layer, first = config.layer, min(config.layers_to_update)
    if directions is None and config.reference_mode:  # drawn as published: on the model's device, in its dtype
        directions = published_directions(n_topics, width, config.seed, device=input_device(model), dtype=_dtype(model))
    elif directions is None:
        directions = random_directions(n_topics, width, config.seed)
    if directions.shape != (n_topics, width):
        raise ConfigError(f"directions have shape {tuple(directions.shape)}; expected ({n_topics}, {width})")
    alphas = config.per_topic("alpha", n_topics)
    if any(p.dtype == torch.float16 for p in selected.values()):
        warnings.warn(
            "training float16 tensors: AdamW keeps its moments in float16 too, where small squared gradients "
            "underflow and steps blow up; load the model in bfloat16 or float32 (--dtype)",
            stacklevel=3,
        )
    if config.reference_mode:  # the published script seeds the global generators (dropout draws from them)
        torch.manual_seed(config.seed)
    steps = schedule(n_topics, [len(b) for b in [*forget, *retain]], config.max_batches, config.epochs)
    adversarial = config.method in ADVERSARIAL
    if adversarial:  # each batch: one adversary, then adv_model_steps updates under it (published RMU-LAT)
        steps = [s for s in steps for _ in range(config.adv_model_steps)]

    frozen_norms, frozen_means = [], []
    with torch.no_grad():
        for topic in range(n_topics):
            batch = forget[topic][0]
            acts = collect(model, batch, layer)[layer]
            frozen_norms.append(float(mean_token_norm(acts, _mask(batch, config))))
            if config.method == "rmu-flat":
                keep = real_positions(batch.get("attention_mask"), acts, acts.dtype)[..., None]
                frozen_means.append((acts * keep).sum(dim=(0, 1)).float() / keep.sum().float())
    if config.adaptive_coeff is not None:
        coefficients = [config.adaptive_coeff * norm for norm in frozen_norms]
    else:
        coefficients = config.per_topic("steering_coeff", n_topics)

    original = {name: p.detach().clone() for name, p in selected.items()}
    result = RMUResult(config, names, directions.clone(), coefficients, frozen_norms, original=original)
    replay = _FrozenReplay(model, names, first, layer, frozen=original)  # one copy serves both
    cache = None if adversarial else _epoch_cache(model, config)  # an adversary changes the inputs every step
    flags = {name: p.requires_grad for name, p in params.items()}
    was_training = model.training
    # c·u in the directions' dtype (float32, or the model's for the published draw), computed as published
    # (u times c); each loss moves it to where h_ℓ lives (layers may sit on different devices)
    targets = [u * c for c, u in zip(coefficients, directions, strict=True)]
    if config.method == "rmu-flat":  # c·u + the frozen mean forget activation with its u part taken out
        targets = [t + _off(mean.to(t), u) for t, u, mean in zip(targets, directions, frozen_means, strict=True)]
    adversary: LatentAdversary | None = None
    adversary_losses: list[float] = []
    try:
        # dropout off: RMU compares activations, which must not be noisy. The published loop trains the
        # updated model in .train() (its frozen copy stays in eval); reference mode does the same, so a model
        # with dropout sees it there too (Zephyr's is 0)
        model.train(config.reference_mode)
        for p in params.values():
            p.requires_grad_(False)
        for p in selected.values():
            p.requires_grad_(True)
        optimizer = make_optimizer(config.optimizer_name, list(selected.values()), config.lr)
        size = world()[1]
        bar = tqdm(steps, desc="RMU", disable=not (progress and is_main()), unit="step")
        for step, (topic, index) in enumerate(bar):
            start = time.perf_counter()
            forget_batch, retain_batch = forget[topic][index], retain[topic][index]
            if adversarial and step % config.adv_model_steps == 0:  # a new batch: a new adversary
                adversary, adversary_losses = _fit_adversary(model, forget_batch, retain_batch, config)
            optimizer.zero_grad(set_to_none=True)
            hits = cache.hits if cache is not None else 0
            forget_loss, h_forget, forget_mask = _forget_loss(
                model,
                forget_batch,
                replay,
                targets[topic],
                config,
                cache,
                ("forget", topic, index),
                adversary=adversary,
                direction=directions[topic],
            )
            _check_finite(forget_loss, step, "forget", _dtype(model), flat=config.method == "rmu-flat")
            forget_loss.backward()  # frees the forget graph before the retain pass builds its own

            retain_loss, h_retain, retain_mask = _retain_loss(
                model, retain_batch, replay, config, alphas[topic], cache, ("retain", topic, index)
            )
            _check_finite(retain_loss, step, "retain", _dtype(model))
            retain_loss.backward()
            if size > 1:  # data parallel: every rank holds a shard of the global batch; sum the shards' gradients
                for p in selected.values():
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    all_reduce_sum(p.grad)
            optimizer.step()
            forget_value = all_reduce_sum(forget_loss.detach().clone())
            retain_value = all_reduce_sum(retain_loss.detach().clone())
            loss = forget_value + retain_value
            log = StepLog(
                step=step,
                topic=topic,
                forget_loss=float(forget_value),
                retain_loss=float(retain_value),
                loss=float(loss),
                step_seconds=time.perf_counter() - start,
                forget_norm=float(mean_token_norm(h_forget, forget_mask)),
                retain_norm=float(mean_token_norm(h_retain, retain_mask)),
                cached=cache is not None and cache.hits == hits + 2,
                adversary_loss=adversary_losses[-1] if adversary is not None and adversary_losses else None,
            )
            result.history.append(log)
            bar.set_postfix(forget=f"{log.forget_loss:.3g}", retain=f"{log.retain_loss:.3g}")
            if on_step is not None and is_main():
                on_step(log)
        if steps:  # the last update is checked too: the loss it leads to, and the weights themselves
            topic, index = steps[-1]
            with torch.no_grad():
                after, _, _ = _forget_loss(model, forget[topic][index], replay, targets[topic], config)
            after_value = all_reduce_sum(after.detach().clone())
            flat = config.method == "rmu-flat"
            _check_finite(after_value, len(steps), "forget (after the last update)", _dtype(model), flat=flat)
            bad = [name for name, p in selected.items() if not bool(torch.isfinite(p).all())]
            if bad:
                raise TrainingError(f"the updated weights {bad} hold NaN or infinite values; lower the learning rate")
    except BaseException:
        with torch.no_grad():
            for name, p in selected.items():
                p.copy_(original[name])
        raise
    finally:
        for name, p in params.items():
            p.requires_grad_(flags[name])
        model.train(was_training)
    return result


@dataclass(frozen=True)
class _Shard:
    """This rank's rows of a global batch, the mask its loss averages over, and the global denominator."""

    inputs: dict[str, Tensor]
    mask: Tensor | None  # None in reference mode: every position counts, padding included
    denominator: float | None  # the number of averaged values in the *global* batch; None: this is all of it


def _shard(model: nn.Module, batch: Batch, config: RMUConfig) -> _Shard | None:
    """This rank's part of ``batch`` (None when there are more ranks than rows).

    Every rank has the whole batch (tokenised the same way), so the global count needs no communication;
    dividing each shard's sum by it makes the shards' losses add up to the global loss. In one process the
    shard is the whole batch and the loss is the plain one.
    """
    full_mask = batch.get("attention_mask")
    rows = my_rows(batch["input_ids"].shape[0])
    inputs = {k: v[rows] for k, v in batch.items()}
    width = d_model(model)
    if config.reference_mode or full_mask is None:
        denominator = float(batch["input_ids"].numel() * width)
    else:
        denominator = float(full_mask.sum()) * width
    if inputs["input_ids"].shape[0] == 0:
        return None
    mask = None if config.reference_mode else inputs.get("attention_mask")
    whole = inputs["input_ids"].shape[0] == batch["input_ids"].shape[0]
    return _Shard(inputs, mask, None if whole else denominator)


def _loss_dtype(h: Tensor, config: RMUConfig) -> Tensor:
    """Losses are computed in float32 whatever the model's dtype (a float16 sum overflows), except in
    reference mode, which computes them in the model's dtype as the published code does."""
    return h if config.reference_mode else h.float()


def _nothing(model: nn.Module) -> tuple[Tensor, Tensor, None]:
    """The loss of a rank with no rows: a zero that backpropagates nothing, on the model's device."""
    device = input_device(model)
    return torch.zeros((), device=device, requires_grad=True), torch.zeros(0, 0, d_model(model), device=device), None


def _epoch_cache(model: nn.Module, config: RMUConfig) -> EpochCache | None:
    """The epoch cache, when epochs repeat, it has a budget, and passes are deterministic (no dropout)."""
    if config.epochs < 2 or config.epoch_cache_gb == 0:
        return None
    if config.reference_mode and not no_dropout(model):  # trains in .train(): dropout would differ per epoch
        return None
    if config.epoch_cache_gb is not None:
        return EpochCache(int(config.epoch_cache_gb * 2**30))
    return EpochCache(available_bytes(input_device(model)) // 4)


def _updated_h(
    model: nn.Module,
    inputs: Batch,
    replay: _FrozenReplay,
    cache: EpochCache | None,
    key: tuple[str, int, int] | None,
    *,
    frozen_too: bool,
) -> tuple[Tensor, Tensor | None]:
    """The updated model's h_ℓ (with its graph) and, with ``frozen_too``, the frozen model's h_ℓ.

    A batch kept by the epoch cache runs layers first..ℓ only, from what the cache kept; any other batch runs
    the model up to ℓ (and the frozen replay), and is offered to the cache.
    """
    mask = inputs.get("attention_mask")
    hit = cache.get(key) if cache is not None and key is not None else None
    if hit is not None:
        return replay.run(hit.calls, hit.mask, frozen=False), hit.frozen
    keep = cache is not None and key is not None
    if not (frozen_too or keep):
        return collect(model, inputs, replay.layer, keep_graph=True)[replay.layer], None
    handle, calls = replay.capturing()
    with handle:
        h = collect(model, inputs, replay.layer, keep_graph=True)[replay.layer]
    frozen = None
    if frozen_too:
        with torch.no_grad():
            frozen = replay(calls, mask)
    if cache is not None and key is not None:
        cache.offer(key, calls, replay.first, mask, frozen)
    return h, frozen


def _fit_adversary(
    model: nn.Module, forget: Batch, retain: Batch, config: RMUConfig
) -> tuple[LatentAdversary | None, list[float]]:
    """The adversary for this rank's rows of a forget batch (None for a rank with no rows)."""
    forget_shard, retain_shard = _shard(model, forget, config), _shard(model, retain, config)
    if forget_shard is None:
        return None, []
    return fit_adversary(model, forget_shard.inputs, None if retain_shard is None else retain_shard.inputs, config)


def _forget_loss(
    model: nn.Module,
    batch: Batch,
    replay: _FrozenReplay,
    target: Tensor,
    config: RMUConfig,
    cache: EpochCache | None = None,
    key: tuple[str, int, int] | None = None,
    *,
    adversary: LatentAdversary | None = None,
    direction: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """MSE of the updated h_ℓ to c·u over this rank's rows: ``(loss, h_ℓ, mask)``; under ``adversary`` when
    given; for ``rmu-flat``, plus ``flat_weight`` times the MSE of the error's part orthogonal to ``direction``."""
    shard = _shard(model, batch, config)
    if shard is None:
        return _nothing(model)
    with adversary.intervention() if adversary is not None else nullcontext():
        h, _ = _updated_h(model, shard.inputs, replay, cache, key, frozen_too=False)
    pred = _loss_dtype(h, config)
    goal = target.to(device=h.device, dtype=pred.dtype)
    loss = masked_mse(pred, goal, shard.mask, denominator=shard.denominator)
    if config.method == "rmu-flat" and direction is not None:
        off = _off(pred - goal, direction.to(device=h.device, dtype=pred.dtype))
        zero = torch.zeros((), device=h.device, dtype=pred.dtype)
        loss = loss + config.flat_weight * masked_mse(off, zero, shard.mask, denominator=shard.denominator)
    return loss, h, shard.mask


def _off(x: Tensor, u: Tensor) -> Tensor:
    """``x`` with its component along ``u`` removed (``u`` need not be unit length)."""
    u = u / u.norm().clamp(min=1e-12)
    return x - (x @ u)[..., None] * u


def _retain_loss(
    model: nn.Module,
    batch: Batch,
    replay: _FrozenReplay,
    config: RMUConfig,
    weight: float,
    cache: EpochCache | None = None,
    key: tuple[str, int, int] | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """α · MSE of the updated h_ℓ to the frozen replay's over this rank's rows: ``(loss, h_ℓ, mask)``."""
    shard = _shard(model, batch, config)
    if shard is None:
        return _nothing(model)
    h, frozen = _updated_h(model, shard.inputs, replay, cache, key, frozen_too=True)
    assert frozen is not None
    pred = _loss_dtype(h, config)
    goal = frozen.to(device=h.device, dtype=pred.dtype)
    return masked_mse(pred, goal, shard.mask, denominator=shard.denominator) * weight, h, shard.mask


def _dtype(model: nn.Module) -> torch.dtype:
    """The model's floating-point dtype (``model.dtype`` of a transformers model)."""
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def _check_finite(loss: Tensor, step: int, which: str, dtype: torch.dtype | None = None, *, flat: bool = False) -> None:
    if not torch.isfinite(loss):
        if dtype == torch.float16:
            advice = "float16 activations overflow past 65504: run in bfloat16 or float32 (--dtype)"
        else:
            advice = "lower the learning rate, the steering coefficient or alpha" + (" or flat_weight" if flat else "")
        raise TrainingError(f"the {which} loss became {float(loss.detach())} at step {step}; {advice}")


def _mask(batch: Batch, config: RMUConfig) -> Tensor | None:
    return None if config.reference_mode else batch.get("attention_mask")


class TokenizedBatches(Sequence[dict[str, Tensor]]):
    """Batches of texts tokenized on access (only the batches a run uses are ever tokenized).

    Right padding by default; left padding with EOS as the pad token in reference mode, as published. Texts
    longer than ``max_length`` tokens are cut on the right (keeping their start), as published.
    """

    def __init__(
        self,
        tokenizer: Any,
        batches: Sequence[Sequence[str]],
        config: RMUConfig,
        device: torch.device,
        max_length: int,
    ) -> None:
        self.tokenizer, self.batches, self.config, self.device = tokenizer, batches, config, device
        self.max_length = max_length
        self.side: Literal["left", "right"] = "left" if config.reference_mode else "right"
        eos = getattr(tokenizer, "eos_token_id", None)
        self.pad = eos if config.reference_mode and isinstance(eos, int) else pad_id(tokenizer)
        self._done: dict[int, dict[str, Tensor]] = {}  # epochs revisit batches: tokenize each once

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, Tensor]:  # type: ignore[override]
        if index not in self._done:
            self._done[index] = self._tokenize(index)
        return self._done[index]

    def _tokenize(self, index: int) -> dict[str, Tensor]:
        texts = self.batches[index]
        encoded = tokenize_batches(
            self.tokenizer,
            texts,
            len(texts),
            max_length=self.max_length,
            padding_side=self.side,
            pad_token_id=self.pad,
            device=self.device,
        )
        return next(encoded)


def unlearn(
    model: nn.Module,
    tokenizer: Any,
    forget: Sequence[Sequence[str]],
    retain: Sequence[Sequence[str]],
    config: RMUConfig | None = None,
    *,
    control_vectors: Sequence[ControlVector | Tensor] | Tensor | None = None,
    forget_names: Sequence[str] | None = None,
    retain_names: Sequence[str] | None = None,
    progress: bool = True,
    on_step: Callable[[StepLog], None] | None = None,
) -> RMUResult:
    """RMU on texts: one list of documents per forget corpus, and one retain list per forget corpus.

    Interventions active on ``model`` during the call act on the updated and the frozen model alike, each
    once (see the docs: "RMU under steering").

    Args:
        model: a causal LM of a supported architecture; edited in place (only the selected tensors change).
        tokenizer: its tokenizer.
        forget: one list of documents per forget corpus (topic).
        retain: one list of documents per forget corpus.
        config: hyperparameters (``RMUConfig()`` when omitted; see :func:`preset`).
        control_vectors: one direction per forget corpus (tensors, ``ControlVector`` s whose direction at
            ``config.layer`` is used, or a ``[T d_model]`` tensor); random and seeded when omitted.
        forget_names: names of the forget corpora, for messages.
        retain_names: names of the retain corpora, for messages.
        progress: show a progress bar.
        on_step: called with each step's :class:`StepLog`.

    Returns:
        An :class:`RMUResult`: the updated parameter names, the directions u_t ``[T d_model]``, the
        coefficients c_t, the loss history and the original tensors.
    """
    config = (config or RMUConfig()).resolved(model_depth(model))  # layers counted from the last, counted
    for what, corpora in (("forget", forget), ("retain", retain)):
        if isinstance(corpora, str) or any(isinstance(c, str) or not isinstance(c, Sequence) for c in corpora):
            raise ConfigError(
                f"{what} must be a list of corpora, each a list of documents: [[doc, doc, ...]], not a list of "
                "documents (which would make every document, or every character, a corpus of its own)"
            )
    if len(forget) != len(retain):
        raise ConfigError(f"need one retain corpus per forget corpus, got {len(forget)} and {len(retain)}")
    f_names = forget_names or [f"forget corpus {i}" for i in range(len(forget))]
    r_names = retain_names or [f"retain corpus {i}" for i in range(len(retain))]
    forget_batches = [make_batches(t, config, name=f_names[i], shuffle_seed=i) for i, t in enumerate(forget)]
    retain_batches = [make_batches(t, config, name=r_names[i], shuffle_seed=1000 + i) for i, t in enumerate(retain)]
    device = input_device(model)
    lengths = config.forget_lengths(len(forget))  # e.g. bio 512, cyber 768 tokens in the published run
    forget_tok = [
        TokenizedBatches(tokenizer, b, config, device, n) for b, n in zip(forget_batches, lengths, strict=True)
    ]
    retain_tok = [TokenizedBatches(tokenizer, b, config, device, config.max_length) for b in retain_batches]
    directions = None
    if control_vectors is not None:
        if isinstance(control_vectors, Tensor):
            control_vectors = list(control_vectors)
        if len(control_vectors) != len(forget):
            raise ConfigError(f"{len(control_vectors)} control vectors for {len(forget)} forget corpora")
        directions = directions_from(control_vectors, config.layer, d_model(model), n_layers=n_layers(model))
    return train(model, forget_tok, retain_tok, config, directions=directions, progress=progress, on_step=on_step)
