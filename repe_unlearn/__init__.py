"""repe_unlearn: activation editing for HuggingFace causal LMs with hooks, and RMU unlearning built on it.

The public surface, in one place: the names this file exports (the intervention layer), and the subpackages
``rmu``, ``evaluation``, ``diagnostics``, ``attacks``, ``robustness``, ``data``, ``plots``, ``toy``, ``errors``,
``interop`` (lazy imports of lm-eval, gguf, repeng, steering-vectors formats) and
``nnsight_adapter`` (imported only when asked for: ``import nnsight`` patches globally). Modules whose names
start with ``_`` are private; their public names are re-exported here. Names load on first use, so
``import repe_unlearn`` (and ``repe-unlearn --help``) costs no torch import.
"""

from typing import TYPE_CHECKING

from ._lazy import attributes
from .errors import (
    ArchitectureError,
    ConfigError,
    DataError,
    FormatError,
    HookPointError,
    LayerNotFoundError,
    RepeUnlearnError,
    ShapeError,
    TrainingError,
)

if TYPE_CHECKING:
    from ._cache import ActivationCache, collect, collect_pooled, record, run_with_cache
    from ._heads import ablate_heads
    from ._hooks import (
        HookContext,
        HookFn,
        HookHandle,
        Intervention,
        Interventions,
        active_hooks,
        attach,
        remove_hooks,
    )
    from ._lens import logit_lens
    from ._masking import last_token, masked_mean
    from ._models import (
        HEAD_POINTS,
        HOOK_POINTS,
        RESIDUAL_POINTS,
        Architecture,
        HookPoint,
        architecture,
        d_model,
        decoder_layers,
        final_norm,
        input_device,
        mlp_down_proj,
        n_heads,
        n_layers,
        register_architecture,
        resolve_layer,
        supported_model_types,
    )
    from ._patching import PatchingSweep, patch, patching_sweep
    from ._vectors import ControlVector, ablate_direction
    from .data import read_texts, tokenize_batches

__version__ = "0.1.0"

_WHERE = {  # public name -> the module that defines it, imported on first use
    "last_token": "._masking",
    "masked_mean": "._masking",
    "ActivationCache": "._cache",
    "collect": "._cache",
    "collect_pooled": "._cache",
    "record": "._cache",
    "run_with_cache": "._cache",
    "logit_lens": "._lens",
    "ablate_heads": "._heads",
    "PatchingSweep": "._patching",
    "patch": "._patching",
    "patching_sweep": "._patching",
    "final_norm": "._models",
    "read_texts": ".data",
    "tokenize_batches": ".data",
    "HookContext": "._hooks",
    "HookFn": "._hooks",
    "HookHandle": "._hooks",
    "Intervention": "._hooks",
    "Interventions": "._hooks",
    "active_hooks": "._hooks",
    "attach": "._hooks",
    "remove_hooks": "._hooks",
    "HOOK_POINTS": "._models",
    "HEAD_POINTS": "._models",
    "RESIDUAL_POINTS": "._models",
    "n_heads": "._models",
    "Architecture": "._models",
    "HookPoint": "._models",
    "architecture": "._models",
    "d_model": "._models",
    "decoder_layers": "._models",
    "input_device": "._models",
    "mlp_down_proj": "._models",
    "n_layers": "._models",
    "register_architecture": "._models",
    "resolve_layer": "._models",
    "supported_model_types": "._models",
    "ControlVector": "._vectors",
    "ablate_direction": "._vectors",
}
__getattr__, __dir__ = attributes(__name__, _WHERE)

__all__ = [
    "HEAD_POINTS",
    "HOOK_POINTS",
    "RESIDUAL_POINTS",
    "ActivationCache",
    "Architecture",
    "ArchitectureError",
    "ConfigError",
    "ControlVector",
    "DataError",
    "FormatError",
    "HookContext",
    "HookFn",
    "HookHandle",
    "HookPoint",
    "HookPointError",
    "Intervention",
    "Interventions",
    "LayerNotFoundError",
    "PatchingSweep",
    "RepeUnlearnError",
    "ShapeError",
    "TrainingError",
    "__version__",
    "ablate_direction",
    "ablate_heads",
    "active_hooks",
    "architecture",
    "attach",
    "collect",
    "collect_pooled",
    "d_model",
    "decoder_layers",
    "final_norm",
    "input_device",
    "last_token",
    "logit_lens",
    "masked_mean",
    "mlp_down_proj",
    "n_heads",
    "n_layers",
    "patch",
    "patching_sweep",
    "read_texts",
    "record",
    "register_architecture",
    "remove_hooks",
    "resolve_layer",
    "run_with_cache",
    "supported_model_types",
    "tokenize_batches",
]
