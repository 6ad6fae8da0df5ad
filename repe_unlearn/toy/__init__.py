"""The embedded default: a fictitious world, a tiny model that learned it, and where the shipped ones live."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._lazy import attributes

if TYPE_CHECKING:
    from .config import PretrainConfig
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


def load_shipped_model() -> tuple[Any, Any]:
    """The toy model the package ships and its tokenizer (from the package directory; no download)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(SHIPPED_MODEL, local_files_only=True, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_MODEL, local_files_only=True)
    return model.eval(), tokenizer


_WHERE = {  # public name -> the module that defines it, imported on first use
    "PretrainConfig": ".config",
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
    "SHIPPED_MODEL",
    "SHIPPED_WORLD",
    "SHIPS",
    "TOWNS",
    "Domain",
    "Entity",
    "PretrainConfig",
    "Relation",
    "ToySession",
    "World",
    "load_shipped_model",
    "notebook_setup",
    "pretrain",
    "train_tokenizer",
    "write_world",
]
