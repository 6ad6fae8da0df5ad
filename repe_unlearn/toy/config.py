"""The toy model's size and training schedule (no torch here: the CLI builds its flags from it at once)."""

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..errors import ConfigError


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    """Model size and training schedule. By default training runs until the facts are known: with MCQ items to
    check, until every set reaches ``target`` accuracy; without, until the loss stops falling; never beyond
    ``max_steps`` or ``max_seconds`` (a run stopped there says so). ``steps`` fixes the length instead."""

    d_model: int = field(default=128, metadata=_help("width of the residual stream"))
    n_layers: int = field(default=4, metadata=_help("decoder layers"))
    n_heads: int = field(default=4, metadata=_help("attention heads"))
    d_mlp: int = field(default=512, metadata=_help("MLP hidden width"))
    init_std: float = field(
        default=0.05, metadata=_help("standard deviation of the initial weights (transformers' initializer_range)")
    )
    vocab_size: int = field(default=1024, metadata=_help("byte-level BPE vocabulary trained on the corpora"))
    steps: int | None = field(
        default=None, metadata=_help("train exactly this many steps (one cosine cycle) instead of until learned")
    )
    target: float = field(default=0.98, metadata=_help("stop once every --eval-mcq set reaches this accuracy"))
    eval_every: int = field(default=25, metadata=_help("steps between accuracy (or loss-plateau) checks"))
    decay_fraction: float = field(
        default=0.4,
        metadata=_help(
            "until learned: the rate holds its peak until the facts are nearly known, then decays over this "
            "fraction of the steps run so far"
        ),
    )
    warmup: int = field(
        default=30, metadata=_help("linear warm-up steps at the start of training and of each return to the peak")
    )
    max_steps: int = field(default=4000, metadata=_help("ceiling on steps (reported when hit)"))
    max_seconds: float = field(default=300.0, metadata=_help("ceiling on training seconds (reported when hit)"))
    batch_size: int = field(default=16, metadata=_help("documents per step (each epoch visits every document)"))
    lr: float = field(default=3e-3, metadata=_help("peak learning rate"))
    optimizer: Literal["adamw", "muon"] = field(
        default="adamw",
        metadata=_help(
            "adamw: AdamW on every weight; muon: Muon (orthogonalised momentum, its step scaled to AdamW's size, so "
            "one --lr serves both) on the decoder layers' matrices and AdamW on the embeddings and norms"
        ),
    )
    weight_decay: float = field(
        default=0.0, metadata=_help("decoupled weight decay (on every weight, either optimizer)")
    )
    max_length: int = field(default=256, metadata=_help("tokens per document; longer ones are cut"))
    seed: int = field(default=0, metadata=_help("seed of the initialisation and of the sampling"))
    shuffle_sentences: bool = field(
        default=True, metadata=_help("shuffle the sentences of one-line documents (multi-line ones stay in order)")
    )

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "d_mlp", "vocab_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("eval_every", "max_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if not 0 < self.decay_fraction <= 10:
            raise ConfigError(f"decay_fraction must be above 0 and at most 10, got {self.decay_fraction}")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be at least 0, got {self.warmup}")
        if not 0 < self.target <= 1:
            raise ConfigError(f"target is an accuracy between 0 and 1, got {self.target}")
        if not (self.max_seconds > 0 and math.isfinite(self.max_seconds)):
            raise ConfigError(f"max_seconds must be a positive number, got {self.max_seconds}")
        if self.vocab_size < 259:
            raise ConfigError(f"vocab_size must be at least 259 (256 bytes, 3 special tokens), got {self.vocab_size}")
        if self.max_length < 2:
            raise ConfigError(f"max_length must be at least 2 (one token to predict the next), got {self.max_length}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if not 0 < self.init_std <= 1:  # transformers refuses an initializer_range above 1
            raise ConfigError(f"init_std must be above 0 and at most 1, got {self.init_std}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.optimizer not in ("adamw", "muon"):
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; valid: adamw, muon")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"weight_decay must be a number at least 0, got {self.weight_decay}")
        if self.weight_decay * self.lr >= 1:  # each step multiplies the weights by 1 - lr x weight_decay
            raise ConfigError(
                f"weight_decay x lr must be below 1 (each step scales the weights by 1 - lr x weight_decay), "
                f"got {self.weight_decay} x {self.lr}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class LetterConfig:
    """How `train_letters` teaches a model that knows facts from prose to answer them as letter questions:
    ``layers`` new decoder layers stacked on the frozen model, trained on answered letter questions about some
    entities (mixed with prose), with a loss on where three heads attend on those questions and two logit-lens
    losses after the first new layer (see `repe_unlearn.toy.letters`)."""

    layers: int = field(
        default=2, metadata=_help("new decoder layers stacked on the frozen model (at least 2 with the guide)")
    )
    mlp: bool = field(default=True, metadata=_help("give the new layers MLPs (--no-mlp: attention only)"))
    steps: int = field(default=1500, metadata=_help("training steps"))
    batch_size: int = field(default=32, metadata=_help("letter questions per step"))
    prose: int = field(default=16, metadata=_help("prose documents per step (keep the cloze answers)"))
    lr: float = field(
        default=1e-3,
        metadata=_help("peak learning rate (a linear warm-up over 50 steps times a cosine decay over all the steps)"),
    )
    init_std: float = field(default=0.1, metadata=_help("standard deviation of the new layers' initial weights"))
    fresh: float = field(
        default=1.0,
        metadata=_help(
            "share of the trained questions asked with three distractors drawn afresh from the relation's values "
            "(so that remembering which of four fixed choices was right does not answer them)"
        ),
    )
    guide: float = field(
        default=1.0,
        metadata=_help(
            "weight of the loss on where heads attend on the trained questions (first new layer: head 0 from each "
            "choice to its letter, head 1 from 'Answer:' to the question's end; last new layer: the first "
            "--match-heads heads from 'Answer:' to the right choice); 0 turns it off"
        ),
    )
    match_heads: int = field(default=2, metadata=_help("heads of the last new layer guided to the right choice"))
    identity: float = field(
        default=3.0, metadata=_help("weight of the logit-lens loss: each choice's first token reads as itself")
    )
    carry: float = field(
        default=3.0,
        metadata=_help("weight of the logit-lens loss: 'Answer:' reads as the right choice's first token"),
    )
    eval_every: int = field(default=150, metadata=_help("steps between accuracy checks (shown on the bar)"))
    seed: int = field(default=0, metadata=_help("seed of the new layers' initialisation and of the sampling"))

    def __post_init__(self) -> None:
        for name in ("layers", "steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.prose < 0 or self.match_heads < 0 or self.seed < 0:
            name = next(n for n in ("prose", "match_heads", "seed") if getattr(self, n) < 0)
            raise ConfigError(f"{name} must be at least 0, got {getattr(self, name)}")
        if self.guide and self.layers < 2:
            raise ConfigError(
                f"the attention guide needs 2 new layers (one binds letters, one matches), got layers={self.layers}; "
                "raise layers or set guide=0"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if not 0 < self.init_std <= 1:
            raise ConfigError(f"init_std must be above 0 and at most 1, got {self.init_std}")
        if not 0 <= self.fresh <= 1:
            raise ConfigError(f"fresh is a share between 0 and 1, got {self.fresh}")
        for name in ("guide", "identity", "carry"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} is a loss weight, a number at least 0, got {value}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)
