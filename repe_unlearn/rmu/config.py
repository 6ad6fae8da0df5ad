"""RMU hyperparameters: one frozen dataclass (the CLI derives its flags and defaults from it) and presets."""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError

OptimizerName = Literal["adamw-legacy", "adamw"]
OPTIMIZERS: tuple[OptimizerName, ...] = ("adamw-legacy", "adamw")
MethodName = Literal["rmu", "rmu-lat", "adv-rmu", "rmu-flat"]
METHODS: tuple[MethodName, ...] = ("rmu", "rmu-lat", "adv-rmu", "rmu-flat")
ADVERSARIAL: tuple[MethodName, ...] = ("rmu-lat", "adv-rmu")  # methods with an inner latent adversary
FLOAT32_MAX = 3.4028234663852886e38
# the fields only some methods read, and which
METHOD_FIELDS: dict[str, tuple[MethodName, ...]] = {
    **dict.fromkeys(("adv_layer", "adv_epsilon", "adv_lr", "adv_steps", "adv_model_steps"), ADVERSARIAL),
    "adv_away": ("rmu-lat",),
    "flat_weight": ("rmu-flat",),
}


def _layers(n: int) -> str:
    return f"{n} layer" if n == 1 else f"{n} layers"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True, kw_only=True)
class RMUConfig:
    """Hyperparameters of RMU. Defaults are the published code's (WMDP repository, ``rmu/unlearn.py``)."""

    layer: int = field(
        default=7,
        metadata=_help("the steered layer ℓ, whose residual output is misdirected (negative: from the last, -1)"),
    )
    update_layers: tuple[int, ...] | None = field(
        default=None,
        metadata=_help("layers whose parameters are updated (default: ℓ-2, ℓ-1, ℓ; negative: from the last)"),
    )
    param_template: str | None = field(
        default=None,
        metadata=_help("name of the updated parameter with {layer} (default: the MLP output projection weight)"),
    )
    steering_coeff: tuple[float, ...] = field(
        default=(20.0,), metadata=_help("c per forget corpus; one value applies to all")
    )
    alpha: tuple[float, ...] = field(default=(100.0,), metadata=_help("retain-loss weight per forget corpus"))
    adaptive_coeff: float | None = field(
        default=None, metadata=_help("β: set c = β · mean per-token norm of the frozen h_ℓ on forget data")
    )
    lr: float = field(default=5e-5, metadata=_help("AdamW learning rate (eps 1e-6, no weight decay)"))
    optimizer: OptimizerName | None = field(
        default=None,
        metadata=_help(
            "adamw-legacy: the published code's transformers.AdamW (eps on the uncorrected root); adamw: "
            "torch.optim.AdamW (default: adamw-legacy in reference mode, adamw otherwise)"
        ),
    )
    batch_size: int = field(default=4, metadata=_help("texts per forget batch and per retain batch"))
    max_batches: int = field(
        default=80,
        metadata=_help(
            "at most this many batches per epoch (one step each; rmu-lat and adv-rmu make adv_model_steps per batch)"
        ),
    )
    epochs: int = field(default=1, metadata=_help("passes over the batches (the published loop has one)"))
    epoch_cache_gb: float | None = field(
        default=None,
        metadata=_help(
            "memory (GiB) for keeping, after the first epoch, each batch's input to the first updated layer and "
            "the frozen h_ℓ, so later epochs run only the updated layers; 0 turns it off (default: a quarter of "
            "the memory available on the model's device)"
        ),
    )
    max_length: int = field(
        default=512, metadata=_help("tokens per retain text, and per forget text unless --forget-max-length")
    )
    forget_max_length: tuple[int, ...] | None = field(
        default=None,
        metadata=_help(
            "tokens per forget text, per forget corpus in --forget order; the last value repeats for later "
            "corpora (default: max_length)"
        ),
    )
    min_len: int = field(
        default=0,
        metadata=_help("drop texts shorter than this many characters (reference mode: keep len > min_len)"),
    )
    seed: int = field(default=42, metadata=_help("seed of the control vectors and of --shuffle"))
    shuffle: bool = field(default=False, metadata=_help("shuffle each corpus before batching"))
    method: MethodName = field(
        default="rmu",
        metadata=_help(
            "rmu: the paper's; rmu-lat: RMU under a per-token latent adversary (Sheshadri et al. 2024); adv-rmu: "
            "RMU under one adversarial latent vector per batch (the LAU framework of Yuan et al. 2024); rmu-flat: "
            "RMU whose forget activations are c·u plus the mean forget activation off u, so that ablating one "
            "direction leaves the same vector for every token (this project's variant; docs/robust-rmu.md)"
        ),
    )
    adv_layer: int | None = field(
        default=None,
        metadata=_help("rmu-lat/adv-rmu: the layer whose residual output the adversary perturbs (default: ℓ-1)"),
    )
    adv_epsilon: float = field(
        default=2.0,
        metadata=_help(
            "rmu-lat/adv-rmu: L2 bound of the perturbation (rmu-lat: of each token's; adv-rmu: of the one vector)"
        ),
    )
    adv_lr: float = field(default=0.05, metadata=_help("rmu-lat/adv-rmu: the adversary's AdamW learning rate"))
    adv_steps: int = field(default=16, metadata=_help("rmu-lat/adv-rmu: adversary steps per batch"))
    adv_model_steps: int = field(
        default=4,
        metadata=_help("rmu-lat/adv-rmu: model updates per batch under one adversary (each counts as a step)"),
    )
    adv_away: float = field(
        default=1.0,
        metadata=_help(
            "rmu-lat: weight of the adversary's away loss (make retain text unlikely) beside its toward loss "
            "(make forget text likely), 1:1 as published; adv-rmu uses the toward loss alone"
        ),
    )
    flat_weight: float = field(
        default=200.0,
        metadata=_help(
            "rmu-flat: extra weight w of the forget error orthogonal to u, the part ablating u leaves (that part "
            "counts 1 + w times; 200 is the value measured on the toy worlds, not validated on larger models)"
        ),
    )
    reference_mode: bool = field(
        default=False,
        metadata=_help(
            "the published loop: left padding with EOS, MSE over padding too, legacy AdamW, len > min_len, "
            "u drawn on the model's device in its dtype (docs/rmu.md lists every item)"
        ),
    )

    def __post_init__(self) -> None:
        for name in ("lr", "batch_size", "max_batches", "max_length", "epochs"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if self.min_len < 0:
            raise ConfigError(f"min_len must be >= 0, got {self.min_len}")
        if self.epoch_cache_gb is not None and not (math.isfinite(self.epoch_cache_gb) and self.epoch_cache_gb >= 0):
            raise ConfigError(f"epoch_cache_gb must be a finite number >= 0 (0: off), got {self.epoch_cache_gb}")
        for name in ("layer", "adv_layer"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{name} must be a layer index, got {value!r}")
        indices = self.update_layers or ()
        if any(isinstance(i, bool) or not isinstance(i, int) for i in indices):
            raise ConfigError(f"update_layers must be layer indices, got {self.update_layers!r}")
        for name in ("steering_coeff", "alpha"):
            values = getattr(self, name)
            if not values or any(not math.isfinite(v) or v < 0 for v in values):
                raise ConfigError(f"{name} must be one or more finite non-negative numbers, got {values!r}")
        if self.adaptive_coeff is not None and not self.adaptive_coeff > 0:
            raise ConfigError(f"adaptive_coeff must be positive, got {self.adaptive_coeff}")
        if self.update_layers is not None and not self.update_layers:
            raise ConfigError("update_layers must name at least one layer")
        if self.forget_max_length is not None and (
            not self.forget_max_length or any(not isinstance(n, int) or n < 1 for n in self.forget_max_length)
        ):
            raise ConfigError(f"forget_max_length must be positive integers, got {self.forget_max_length!r}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.method != "rmu" and self.reference_mode:
            raise ConfigError(
                f"reference mode reproduces the published RMU loop, which has no {self.method}; to run {self.method} "
                "turn it off (CLI: --no-reference-mode; Python: reference_mode=False)"
            )
        if self.reference_mode and self.optimizer == "adamw":
            raise ConfigError(
                "reference mode runs the published optimizer (adamw-legacy); drop optimizer=adamw or reference_mode"
            )
        self._check_method_fields()
        for name in ("adv_epsilon", "adv_lr", "lr"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
            if value > FLOAT32_MAX:
                raise ConfigError(f"{name} {value!r} is beyond what float32 holds ({FLOAT32_MAX:.3g})")
        for name in ("adv_steps", "adv_model_steps"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("adv_away", "flat_weight"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.param_template is not None:
            try:
                filled = self.param_template.format(layer=0)
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    f"param_template {self.param_template!r} is not a template with {{layer}} alone ({exc!r})"
                ) from None
            if "{layer}" not in self.param_template or not filled:
                raise ConfigError(f"param_template {self.param_template!r} must contain '{{layer}}'")
        self._check_layers()

    def _check_layers(self) -> None:
        """The update and adversary layers against ℓ, once every index counts from the first layer (`resolved`
        counts the others on the model's depth, then checks them here)."""
        if not self.is_resolved:
            return
        above = [i for i in self.update_layers or () if i > self.layer]
        if above:
            raise ConfigError(
                f"update layers {above} are invalid: each must be between 0 and the steered layer {self.layer} "
                "(a layer above ℓ cannot change h_ℓ)"
            )
        if self.method in ADVERSARIAL and self.adv_layer is None and self.layer == 0:
            raise ConfigError(f"{self.method} perturbs a layer below ℓ, and ℓ = 0 has none; steer a later layer")
        if self.adv_layer is not None and self.adv_layer >= self.layer:
            raise ConfigError(
                f"adv_layer {self.adv_layer} must lie below the steered layer {self.layer} (the adversary perturbs "
                "the residual stream on its way to ℓ)"
            )

    @property
    def is_resolved(self) -> bool:
        """Whether every layer index is counted from the first layer (none from the last)."""
        adversary = () if self.adv_layer is None else (self.adv_layer,)
        return min((self.layer, *(self.update_layers or ()), *adversary)) >= 0

    def resolved(self, n_layers: int) -> "RMUConfig":
        """This config for a model of ``n_layers`` decoder layers: negative indices counted from the last (-1 the
        last layer, as in Python), repeated update layers merged; an index beyond the model is refused."""

        def absolute(index: int, name: str) -> int:
            if not -n_layers <= index < n_layers:
                valid = f"valid: {-n_layers}..{n_layers - 1}"
                raise ConfigError(f"{name} {index} is out of range: the model has {_layers(n_layers)} ({valid})")
            return index % n_layers

        layer = absolute(self.layer, "layer")  # the steered layer first: its error names the real culprit
        update = None
        if self.update_layers is not None:
            update = tuple(sorted({absolute(i, "update layer") for i in self.update_layers}))
        adversary = None if self.adv_layer is None else absolute(self.adv_layer, "adv_layer")
        try:
            return dataclasses.replace(self, layer=layer, update_layers=update, adv_layer=adversary)
        except ConfigError as exc:
            if self.is_resolved:
                raise
            given = [self.layer, *(self.update_layers or ()), *(() if self.adv_layer is None else (self.adv_layer,))]
            counted = ", ".join(f"{i} is {i % n_layers}" for i in dict.fromkeys(given) if i < 0)
            raise ConfigError(f"{exc} (counted from the last of {_layers(n_layers)}: {counted})") from None

    @property
    def layers_to_update(self) -> tuple[int, ...]:
        """The update layers, defaulting to ℓ-2, ℓ-1, ℓ (clipped at 0); for a config resolved to a model."""
        self._require_resolved()
        if self.update_layers is not None:
            return tuple(sorted(set(self.update_layers)))
        return tuple(range(max(0, self.layer - 2), self.layer + 1))

    @property
    def adversary_layer(self) -> int:
        """The layer the adversary perturbs: ``adv_layer``, or ℓ-1 as in the published RMU-LAT run (at 0: 0)."""
        self._require_resolved()
        return self.adv_layer if self.adv_layer is not None else max(0, self.layer - 1)

    def _require_resolved(self) -> None:
        if not self.is_resolved:
            raise ConfigError(
                f"layer {self.layer} (or an update or adversary layer) counts from the last layer; resolve it for a "
                "model first: config.resolved(n_layers)"
            )

    @property
    def optimizer_name(self) -> OptimizerName:
        """The optimizer that runs: ``optimizer``, or adamw-legacy in reference mode and adamw otherwise."""
        if self.optimizer is not None:
            return self.optimizer
        return "adamw-legacy" if self.reference_mode else "adamw"

    def forget_lengths(self, n_topics: int) -> list[int]:
        """The forget max length of each forget corpus, in order: ``max_length`` where none is given, and the
        last value for every corpus after the values run out (``(512, 768)`` is the published rule "512 for
        topic 0, 768 for every later topic"; values beyond the last corpus are not used)."""
        if self.forget_max_length is None:
            return [self.max_length] * n_topics
        values = list(self.forget_max_length)
        return [values[min(topic, len(values) - 1)] for topic in range(n_topics)]

    def per_topic(self, name: str, n_topics: int) -> list[float]:
        """``steering_coeff`` or ``alpha`` expanded to one value per forget corpus."""
        values: tuple[float, ...] = getattr(self, name)
        if len(values) == 1:
            return list(values) * n_topics
        if len(values) != n_topics:
            raise ConfigError(
                f"{len(values)} values of {name} for {n_topics} forget corpora; give one value or one per corpus"
            )
        return list(values)

    def _check_method_fields(self) -> None:
        """A field only another method reads, set away from its default, is refused: it would do nothing."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, methods in METHOD_FIELDS.items():
            if self.method not in methods and getattr(self, name) != defaults[name]:
                raise ConfigError(
                    f"{name} applies to {' and '.join(methods)} only; this run's method is {self.method}, which "
                    f"would ignore it (set method, or drop {name})"
                )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``adv_layer``: the layer the adversary perturbs, where there is one)."""
        values = dataclasses.asdict(self)
        if self.method in ADVERSARIAL:
            values["adv_layer"] = self.adversary_layer
        return values


PRESETS: dict[str, dict[str, Any]] = {
    # WMDP paper, Zephyr-7B: Bio 63.7 -> 31.2, Cyber 44.0 -> 28.2, MMLU 58.1 -> 57.1; forget corpora in the
    # published order (bio, cyber): bio cut at 512 tokens, cyber at 768, retain at 512
    "wmdp-zephyr": {
        "layer": 7,
        "update_layers": (5, 6, 7),
        "steering_coeff": (6.5,),
        "alpha": (1200.0,),
        "lr": 5e-5,
        "optimizer": "adamw-legacy",
        "batch_size": 4,
        "max_batches": 150,
        "max_length": 512,
        "forget_max_length": (512, 768),
        "reference_mode": True,
    },
    # the toy models (`toy pretrain`'s 4 layers, d_model 128; the shipped model of `repe-unlearn demo` has 6,
    # residual norm ~14 at layer 4, far from Zephyr's): counted from the last layer, so that it steers the
    # second-to-last layer of either (4 of 6, 2 of 4); the coefficient follows the measured norm (adaptive)
    # instead of a fixed c; 50 forget paragraphs make 5 batches, so the epochs give 200 steps
    # (benchmarks/bench_toy_preset.py)
    "toy": {
        "layer": -2,
        "update_layers": (-4, -3, -2),
        "adaptive_coeff": 8.0,
        "alpha": (100.0,),
        "lr": 5e-3,
        "batch_size": 10,
        "max_batches": 200,
        "epochs": 40,
        "max_length": 128,
    },
}

# per preset and method: what the method changes on top of the preset (benchmarks/bench_robust_rmu.py measured
# the toy values; every method makes the same number of updates as plain RMU)
METHOD_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "wmdp-zephyr": {
        # latent-adversarial-training's run_rmu defaults (its RMU-LAT on Zephyr-7B): torch AdamW, PGD at the
        # residual output of layer 7 for the steered layer 8, ε = 2, 16 adversary steps at lr 0.05, 4 updates each
        "rmu-lat": {
            "reference_mode": False,
            "optimizer": "adamw",
            "layer": 8,
            "update_layers": (6, 7, 8),
            "max_batches": 200,
            "adv_layer": 7,
            "adv_epsilon": 2.0,
            "adv_lr": 0.05,
            "adv_steps": 16,
            "adv_model_steps": 4,
        },
    },
    "toy": {
        # 10 epochs x 5 batches x 4 updates under each adversary = the 200 updates of plain RMU; ε about a third
        # of the residual norm at layer 3
        "rmu-lat": {"epochs": 10, "adv_epsilon": 4.0},
        "adv-rmu": {"epochs": 10, "adv_epsilon": 4.0},
        # the flat target with every MLP below ℓ updated: the erasure reaches the layers that hold the facts
        # (0, 1 and the three below the last: every layer from 0 to ℓ on models of 4 to 6 layers)
        "rmu-flat": {"flat_weight": 200.0, "update_layers": (0, 1, -4, -3, -2)},
    },
}


def preset_values(name: str, method: str | None = None) -> dict[str, Any]:
    """The values of preset ``name`` for ``method`` (default: the preset's own, plain RMU): the preset's, then
    the method's block where the preset has one."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    method = method or PRESETS[name].get("method", "rmu")
    return {**PRESETS[name], **METHOD_PRESETS.get(name, {}).get(method, {}), "method": method}


LAYER_FOLLOWERS = ("update_layers", "adv_layer")  # placed around a preset's own layer ℓ


def with_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A preset's ``values`` with explicit ``overrides`` winning. A preset's update layers and adversary layer sit
    around its own ℓ, so an explicit ``layer`` given without them drops them: they default around the given ℓ
    (ℓ-2, ℓ-1, ℓ; ℓ-1) instead of staying where the preset's ℓ put them. An explicit ``steering_coeff`` given
    without ``adaptive_coeff`` drops the preset's β, which would otherwise set c in its place."""
    base = dict(values)
    if "layer" in overrides and overrides["layer"] != base.get("layer"):
        for name in LAYER_FOLLOWERS:
            if name not in overrides:
                base.pop(name, None)
    if "steering_coeff" in overrides and "adaptive_coeff" not in overrides:
        base.pop("adaptive_coeff", None)
    return {**base, **overrides}


def preset(name: str, **overrides: Any) -> RMUConfig:
    """An :class:`RMUConfig` from a named preset (for ``overrides["method"]`` when given), explicit ``overrides``
    winning; a ``layer`` given without ``update_layers`` (or ``adv_layer``) moves them with it, a
    ``steering_coeff`` replaces the preset's ``adaptive_coeff`` (`with_overrides`)."""
    return RMUConfig(**with_overrides(preset_values(name, overrides.get("method")), overrides))
