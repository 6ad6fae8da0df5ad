"""The embedded default: a fictitious world, a tiny model that learned it, and where the shipped ones live."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._lazy import attributes

if TYPE_CHECKING:
    from .config import LetterConfig, PretrainConfig
    from .letters import WorldLetters, train_letters, world_letters
    from .notebook import ToySession, notebook_setup
    from .pretrain import pretrain, train_tokenizer
    from .world import (
        COMPOUNDS,
        FORGET_DOMAINS,
        PATHOGENS,
        RETAIN_DOMAINS,
        SHIPS,
        TOWNS,
        Domain,
        Entity,
        Relation,
        World,
        write_world,
    )

ASSETS = Path(__file__).parent / "assets"
SHIPPED_WORLD = ASSETS / "world"  # `repe-unlearn toy world --seed 0 --entities 50`
SHIPPED_MODEL = ASSETS / "model"  # `repe-unlearn toy pretrain` on its forget.jsonl + retain.jsonl, seed 0
SHIPPED_LETTERS = ASSETS / "letters"  # `repe-unlearn toy letters` on that model and world: the new layers alone


def load_shipped_model(*, letters: bool = False) -> tuple[Any, Any]:
    """The toy model the package ships and its tokenizer (from the package directory; no download).

    With ``letters``, the shipped letter layers stacked on it (`repe_unlearn.toy.letters`): a model of two more
    layers that also answers its facts as letter-format questions; its first six layers are the shipped model's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(SHIPPED_MODEL, local_files_only=True, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_MODEL, local_files_only=True)
    if letters:
        from .letters import attach_letters

        model = attach_letters(model, SHIPPED_LETTERS)
    return model.eval(), tokenizer


_WHERE = {  # public name -> the module that defines it, imported on first use
    "PretrainConfig": ".config",
    "LetterConfig": ".config",
    "WorldLetters": ".letters",
    "train_letters": ".letters",
    "world_letters": ".letters",
    "ToySession": ".notebook",
    "notebook_setup": ".notebook",
    "pretrain": ".pretrain",
    "train_tokenizer": ".pretrain",
    "PATHOGENS": ".world",
    "COMPOUNDS": ".world",
    "SHIPS": ".world",
    "FORGET_DOMAINS": ".world",
    "RETAIN_DOMAINS": ".world",
    "TOWNS": ".world",
    "Domain": ".world",
    "Entity": ".world",
    "Relation": ".world",
    "World": ".world",
    "write_world": ".world",
}
__getattr__, __dir__ = attributes(__name__, _WHERE)

__all__ = [
    "ASSETS",
    "COMPOUNDS",
    "FORGET_DOMAINS",
    "PATHOGENS",
    "RETAIN_DOMAINS",
    "SHIPPED_LETTERS",
    "SHIPPED_MODEL",
    "SHIPPED_WORLD",
    "SHIPS",
    "TOWNS",
    "Domain",
    "Entity",
    "LetterConfig",
    "PretrainConfig",
    "Relation",
    "ToySession",
    "World",
    "WorldLetters",
    "load_shipped_model",
    "notebook_setup",
    "pretrain",
    "train_letters",
    "train_tokenizer",
    "world_letters",
    "write_world",
]
