"""Tokenizer files of a model directory: copied byte for byte to an output, and checked on a fixed sample.

A published unlearned checkpoint shipped tokenizer files that tokenize differently from its base model (a
missing ``tokenizer.json`` changed the handling of prefix spaces, so the same prompts became other ids, and
every evaluation of it measured something else). Outputs of this package therefore copy the base's files as
they are, and check that the result tokenizes a fixed sample exactly as the base does.
"""

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# every file name transformers reads for a tokenizer (fast and slow, sentencepiece, BPE, WordPiece, tiktoken)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.tiktoken",
)

# prefix spaces, leading and doubled spaces, newlines, the lm-eval prompt, digits, unicode, code
SAMPLE = (
    "The following are multiple choice questions (with answers) about biology.\n\nWhat is 2 + 2?\nA. 3\nB. 4\nAnswer:",
    " A",
    "A",
    "  two leading spaces and a trailing one ",
    "Answer: B\n\nQuestion:",
    "Naïve café, Œuvre — “quoted” ½ 東京 🙂",
    "def f(x):\n    return x ** 2  # comment\n",
    "0123456789 3.14159 1e-6 -42",
    "\n\n\tTabbed\tand\nnew lines\n",
    "Zephyr's WMDP-Bio accuracy fell from 63.7 to 31.2.",
)


def tokenizer_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The tokenizer files present in a model directory."""
    root = Path(directory)
    return [root / name for name in TOKENIZER_FILES if (root / name).is_file()]


def copy_tokenizer_files(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> list[str]:
    """Copy the tokenizer files of ``source`` into ``destination`` byte for byte; returns their names."""
    names = []
    for path in tokenizer_files(source):
        shutil.copyfile(path, Path(destination) / path.name)
        names.append(path.name)
    return names


def tokenization_differences(tokenizer: Any, reference: Any, texts: Sequence[str] = SAMPLE) -> list[str]:
    """The texts of ``texts`` that ``tokenizer`` turns into other ids than ``reference`` does (with and
    without special tokens); empty when the two tokenize alike."""
    differ = []
    for text in texts:
        for special in (True, False):
            if (
                tokenizer(text, add_special_tokens=special)["input_ids"]
                != reference(text, add_special_tokens=special)["input_ids"]
            ):
                differ.append(text)
                break
    return differ


__all__ = ["SAMPLE", "TOKENIZER_FILES", "copy_tokenizer_files", "tokenization_differences", "tokenizer_files"]
