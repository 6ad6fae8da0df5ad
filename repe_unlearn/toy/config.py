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
