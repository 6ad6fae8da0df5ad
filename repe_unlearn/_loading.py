"""Loading a local causal LM: safetensors only (no pickle is ever loaded), never a download, one-line errors.

``first_layers=k`` builds the model with decoder layers 0..k-1 only, reading just their tensors (see
:func:`repe_unlearn._checkpoint.load_first_layers`); it falls back to the whole model when k covers it.
"""

import os
from pathlib import Path
from typing import Any

from .errors import ConfigError


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, naming it."""
    import torch

    try:
        where = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps, auto)") from None
    if where.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if where.type == "cuda" and where.index is not None and where.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if where.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: MPS is not available on this machine")


def _model_directory(path: str | os.PathLike[str]) -> Path:
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise ConfigError(
            f"{path} is not a HuggingFace model directory (no config.json); this tool never downloads models"
        )
    return directory


def checkpoint_depth(path: str | os.PathLike[str], *, trust_remote_code: bool = False) -> int:
    """The decoder layers the model directory ``path`` declares (its config only is read)."""
    from transformers import AutoConfig

    from ._checkpoint import layer_count

    directory = _model_directory(path)
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:400]
        raise ConfigError(f"cannot read the config of the model in {path}: {type(exc).__name__}: {detail}") from None
    return layer_count(config)


def load_causal_lm(
    path: str,
    *,
    dtype: str | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    first_layers: int | None = None,
) -> Any:
    """A causal LM from the local directory ``path`` (``device="auto"``: spread with accelerate).

    Args:
        path: a HuggingFace model directory with safetensors weights.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (default: as saved).
        device: ``"cpu"``, ``"cuda:1"`` ... or ``"auto"``.
        trust_remote_code: allow model code from the directory.
        first_layers: build decoder layers 0..first_layers-1 only (no final norm, no LM head).
    """
    directory = _model_directory(path)
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    from ._checkpoint import check_loaded, load_first_layers

    # safetensors weights only: a pickled pytorch_model.bin is never loaded
    kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": trust_remote_code, "use_safetensors": True}
    if dtype is not None:
        kwargs["dtype"] = getattr(torch, dtype)
    if device == "auto":
        import importlib.util

        if importlib.util.find_spec("accelerate") is None:
            raise ConfigError("--device auto spreads the model with accelerate: pip install accelerate")
        kwargs["device_map"] = "auto"
    if device not in (None, "auto"):
        check_device(device)
    try:
        model = None
        if first_layers is not None:
            partial = {k: v for k, v in kwargs.items() if k not in ("local_files_only", "use_safetensors")}
            model = load_first_layers(directory, first_layers, **partial)
        if model is None:
            model, info = AutoModelForCausalLM.from_pretrained(directory, output_loading_info=True, **kwargs)
            check_loaded(info, path)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError, SafetensorError) as exc:
        # a truncated or random model.safetensors, a broken config.json, an unknown model_type, a mismatch
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:400]
        raise ConfigError(f"cannot load the model in {path}: {type(exc).__name__}: {detail}") from None
    if device not in (None, "auto"):
        model = model.to(device)
    return model


__all__ = ["check_device", "checkpoint_depth", "load_causal_lm"]
