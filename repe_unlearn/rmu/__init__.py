"""RMU (Representation Misdirection for Unlearning, Li et al. 2024) on the intervention layer.

``unlearn(model, tokenizer, forget, retain, config)`` edits the model in place and returns an
:class:`RMUResult`; ``save_unlearned`` writes the model, the delta and the control vectors;
``apply_delta`` rebuilds an unlearned model from its base. ``unlearn_from_pretrained(path, forget, retain,
config, out=...)`` goes from a model directory to an unlearned one holding only layers 0..ℓ in memory.
"""

from typing import TYPE_CHECKING

from .._lazy import attributes

if TYPE_CHECKING:
    from .artifacts import apply_delta, base_fingerprint, load_delta, save_delta, save_unlearned
    from .config import PRESETS, RMUConfig, preset
    from .optim import LegacyAdamW
    from .pretrained import unlearn_from_pretrained
    from .reference import published_corpus, reference_rmu
    from .targets import directions_from, load_directions, published_directions, random_directions, save_directions
    from .trainer import RMUResult, StepLog, make_batches, masked_mse, parameter_names, schedule, train, unlearn

_WHERE = {  # public name -> the module that defines it, imported on first use
    "apply_delta": ".artifacts",
    "base_fingerprint": ".artifacts",
    "load_delta": ".artifacts",
    "save_delta": ".artifacts",
    "save_unlearned": ".artifacts",
    "PRESETS": ".config",
    "RMUConfig": ".config",
    "preset": ".config",
    "LegacyAdamW": ".optim",
    "unlearn_from_pretrained": ".pretrained",
    "published_corpus": ".reference",
    "reference_rmu": ".reference",
    "published_directions": ".targets",
    "directions_from": ".targets",
    "load_directions": ".targets",
    "random_directions": ".targets",
    "save_directions": ".targets",
    "RMUResult": ".trainer",
    "StepLog": ".trainer",
    "make_batches": ".trainer",
    "masked_mse": ".trainer",
    "parameter_names": ".trainer",
    "schedule": ".trainer",
    "train": ".trainer",
    "unlearn": ".trainer",
}
__getattr__, __dir__ = attributes(__name__, _WHERE)

__all__ = [
    "PRESETS",
    "LegacyAdamW",
    "RMUConfig",
    "RMUResult",
    "StepLog",
    "apply_delta",
    "base_fingerprint",
    "directions_from",
    "load_delta",
    "load_directions",
    "make_batches",
    "masked_mse",
    "parameter_names",
    "preset",
    "published_corpus",
    "published_directions",
    "random_directions",
    "reference_rmu",
    "save_delta",
    "save_directions",
    "save_unlearned",
    "schedule",
    "train",
    "unlearn",
    "unlearn_from_pretrained",
]
