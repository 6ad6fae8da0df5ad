"""One call to start a notebook on the embedded default: quiet progress bars, the shipped model and world."""

import warnings
from pathlib import Path
from typing import Any, NamedTuple

from ..data import read_texts
from . import SHIPPED_WORLD, load_shipped_model


class ToySession(NamedTuple):
    """What a notebook on the toy world starts from; unpacks as ``model, tokenizer, forget, retain``."""

    model: Any
    tokenizer: Any
    forget: list[str]  # the world's forget corpus (the invented pathogens)
    retain: list[str]  # the world's retain corpus (the invented towns)

    @property
    def world(self) -> Path:
        """The directory of the shipped world (corpora and MCQ files)."""
        return SHIPPED_WORLD


def notebook_setup() -> ToySession:
    """Load the shipped toy model, its tokenizer and the world's two corpora, with notebook-friendly output.

    Silences tqdm's "IProgress not found" warning (no ipywidgets needed) and transformers' per-file
    progress bars, which are noise next to the package's own.

    Returns:
        A :class:`ToySession`: ``model, tokenizer, forget, retain = notebook_setup()``.
    """
    warnings.filterwarnings("ignore", message="IProgress not found")  # before anything imports tqdm.auto
    import transformers

    transformers.utils.logging.disable_progress_bar()
    model, tokenizer = load_shipped_model()
    return ToySession(
        model, tokenizer, read_texts(SHIPPED_WORLD / "forget.jsonl"), read_texts(SHIPPED_WORLD / "retain.jsonl")
    )
