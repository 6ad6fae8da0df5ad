"""Texts in and out: corpora and MCQ files in the formats users have, and padded batches of model inputs.

Padding is done here rather than by the tokenizer so that a tokenizer without a pad token needs no edit
(the user's tokenizer is never mutated); pad positions are always masked out by the attention mask. The
readers live in `_reading` (no torch there, so that the command line checks its inputs before loading it).
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor

from ._reading import LETTERS, MCQItem, letter_prompt, read_mcq, read_texts
from .errors import ConfigError

__all__ = [
    "LETTERS",
    "MCQItem",
    "encode",
    "letter_prompt",
    "pad_batch",
    "pad_id",
    "read_mcq",
    "read_texts",
    "tokenize_batches",
]


def pad_id(tokenizer: Any) -> int:
    """The id used for padding: the pad token, else EOS (as the published RMU code does), else 0."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (how prompts and continuations are scored)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def pad_batch(
    rows: Sequence[Sequence[int]], pad: int, *, side: Literal["left", "right"] = "right"
) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` ``[batch pos]`` for token-id rows of any lengths, padded on ``side``."""
    if side not in ("left", "right"):
        raise ConfigError(f"padding side must be 'left' or 'right', got {side!r}")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, seq in enumerate(rows):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def tokenize_batches(
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 16,
    *,
    max_length: int | None = None,
    padding_side: Literal["left", "right"] = "right",
    pad_token_id: int | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[dict[str, Tensor]]:
    """Yield ``{"input_ids", "attention_mask"}`` batches of ``batch_size`` texts, in order.

    Texts longer than ``max_length`` tokens are cut on the right — keeping their start — whatever the
    tokenizer's own ``truncation_side`` (some chat tokenizers cut on the left); ``pad_token_id`` overrides
    :func:`pad_id`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    pad = pad_id(tokenizer) if pad_token_id is None else pad_token_id
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        with _truncating_right(tokenizer):
            encoded = tokenizer(chunk, truncation=max_length is not None, max_length=max_length)["input_ids"]
        if any(len(ids) == 0 for ids in encoded):
            raise ConfigError(f"a text in batch starting at item {start} tokenizes to nothing; drop empty texts")
        ids, mask = pad_batch(encoded, pad, side=padding_side)
        yield {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


@contextmanager
def _truncating_right(tokenizer: Any) -> Iterator[None]:
    """The tokenizer truncates on the right inside the block (as the published RMU loop sets it), then
    gets its own setting back."""
    saved = getattr(tokenizer, "truncation_side", None)
    if saved is None or saved == "right":
        yield
        return
    tokenizer.truncation_side = "right"
    try:
        yield
    finally:
        tokenizer.truncation_side = saved
