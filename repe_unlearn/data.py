"""Turning texts into model inputs: batching, padding, attention masks.

Padding is done here rather than by the tokenizer so that a tokenizer without a pad token needs no edit
(the user's tokenizer is never mutated); pad positions are always masked out by the attention mask.
"""

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from .errors import ConfigError


def pad_id(tokenizer: Any) -> int:
    """The id used for padding: the pad token, else EOS (as the published RMU code does), else 0."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def tokenize_batches(
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 16,
    *,
    max_length: int | None = None,
    padding_side: Literal["left", "right"] = "right",
    device: str | torch.device = "cpu",
) -> Iterator[dict[str, Tensor]]:
    """Yield ``{"input_ids", "attention_mask"}`` batches of ``batch_size`` texts, in order."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    pad = pad_id(tokenizer)
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        encoded = tokenizer(chunk, truncation=max_length is not None, max_length=max_length)["input_ids"]
        if any(len(ids) == 0 for ids in encoded):
            raise ConfigError(f"a text in batch starting at item {start} tokenizes to nothing; drop empty texts")
        width = max(len(ids) for ids in encoded)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(encoded):
            span = slice(width - len(seq), width) if padding_side == "left" else slice(0, len(seq))
            ids[row, span] = torch.tensor(seq, dtype=torch.long)
            mask[row, span] = 1
        yield {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
