"""What RMU leaves on disk: the model, the delta, the control vectors, the config.

The model directory is written by streaming the base checkpoint (when there is one in safetensors): every
file keeps the base's layout and bytes but for the updated tensors, and memory holds one chunk or one tensor
(:func:`repe_unlearn._checkpoint.write_patched`); ``save_pretrained`` writes it otherwise.

The delta holds only the updated tensors plus a fingerprint of the base model's values of those tensors,
so ``apply_delta`` can refuse a base it was not made from. Outputs are written to a temporary directory
beside the target and moved into place at the end (see :mod:`repe_unlearn._outputs`): an interrupted run
leaves nothing half-written, and nothing this tool did not write is ever deleted.
"""

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._checkpoint import Checkpoint, has_safetensors, partial_layers, write_patched
from .._io import load_tensors, save_tensors
from .._outputs import OutputDir
from .._tokenizer_files import copy_tokenizer_files, tokenization_differences
from ..errors import ConfigError, FormatError
from .config import RMUConfig
from .targets import save_directions
from .trainer import RMUResult

_KIND = "rmu_delta"


def base_fingerprint(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors``."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_delta(path: str | os.PathLike[str], model: nn.Module, result: RMUResult, *, overwrite: bool = False) -> None:
    """Write the updated tensors of ``model`` with the fingerprint of their values before RMU."""
    params = dict(model.named_parameters())
    tensors = {name: params[name] for name in result.parameter_names}
    bad = [name for name, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise FormatError(f"the updated tensors {bad} hold NaN or infinite values; nothing was written")
    meta = {
        "kind": _KIND,
        "base_fingerprint": base_fingerprint(result.original),
        "delta_fingerprint": base_fingerprint(tensors),  # of the file's own values: a damaged file is refused
        "parameter_names": result.parameter_names,
        "model_type": str(getattr(getattr(model, "config", None), "model_type", "")),
        "config": result.config.to_dict(),
    }
    save_tensors(path, tensors, meta, overwrite=overwrite)


def load_delta(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and metadata of a delta file, checked: finite values that match the file's own checksum,
    and the base fingerprint that :func:`apply_delta` needs."""
    tensors, meta = load_tensors(path, kind=_KIND)
    if not isinstance(meta.get("base_fingerprint"), str):
        raise FormatError(f"{path} has no base_fingerprint; it cannot be checked against a base model")
    own = meta.get("delta_fingerprint")
    if own is not None and own != base_fingerprint(tensors):
        raise FormatError(f"{path}: the tensors do not match the file's own checksum; the file is damaged")
    bad = [name for name, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise FormatError(f"{path}: the tensors {bad} hold NaN or infinite values")
    return tensors, meta


def apply_delta(model: nn.Module, path: str | os.PathLike[str]) -> list[str]:
    """Copy a delta's tensors into ``model`` after checking it is the base the delta was made from."""
    tensors, meta = load_delta(path)
    params = dict(model.named_parameters())
    missing = [name for name in tensors if name not in params]
    if missing:
        raise FormatError(f"{path}: the base model has no parameters {missing}; is it the right architecture?")
    base = {name: params[name] for name in tensors}
    wrong = [f"{n} {tuple(t.shape)} vs {tuple(base[n].shape)}" for n, t in tensors.items() if t.shape != base[n].shape]
    if wrong:
        raise FormatError(f"{path}: tensor shapes differ from the base model's ({'; '.join(wrong)})")
    if base_fingerprint(base) != meta["base_fingerprint"]:
        raise FormatError(
            f"{path} was made from another base model: the fingerprint of {sorted(tensors)} does not match"
        )
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(device=params[name].device, dtype=params[name].dtype))
    return sorted(tensors)


def checkpoint_keys(base: str | os.PathLike[str], model: nn.Module, names: list[str]) -> dict[str, str] | None:
    """The base checkpoint's names for the model's parameters ``names``; None when ``base`` is not a
    safetensors checkpoint that holds them all (the output is then written with ``save_pretrained``)."""
    if not has_safetensors(base):
        return None
    checkpoint = Checkpoint(base)  # a damaged checkpoint is refused, never written around
    prefix = str(getattr(model, "base_model_prefix", "") or "")
    keys = {name: checkpoint.key(name, (prefix,)) for name in names}
    if any(key is None for key in keys.values()):
        return None
    return {name: key for name, key in keys.items() if key is not None}


def check_streamable(model: nn.Module, config: RMUConfig, base: str | os.PathLike[str]) -> None:
    """Before any compute: a model loaded with its first layers only must be writable by streaming its base."""
    from .trainer import parameter_names

    if partial_layers(model) is None:
        return
    names = parameter_names(model, config)
    if checkpoint_keys(base, model, names) is None:
        raise ConfigError(
            f"{base} does not name the updated tensors ({names[0]} ...) as this model does, so the output cannot be "
            "streamed from it; load the full model (CLI: --full-model), which is written with save_pretrained"
        )


def _stored_dtype_loses(tensors: Mapping[str, Tensor], checkpoint: Checkpoint, keys: Mapping[str, str]) -> list[str]:
    """The tensors whose values change when cast to the dtype the base checkpoint stores them in."""
    from .._checkpoint import _DTYPES

    lossy = []
    for name, t in tensors.items():
        stored = _DTYPES.get(checkpoint.locations[keys[name]].dtype)
        if stored is not None and stored != t.dtype and not torch.equal(t.detach().to(stored).to(t.dtype), t.detach()):
            lossy.append(f"{name} ({str(t.dtype).removeprefix('torch.')} -> {str(stored).removeprefix('torch.')})")
    return lossy


def write_model(tmp: Path, model: nn.Module, names: list[str], base: str | os.PathLike[str] | None) -> str:
    """Write the model's weights (and config) into ``tmp``; returns how: ``"streamed"`` or ``"save_pretrained"``."""
    keys = checkpoint_keys(base, model, names) if base is not None else None
    if keys is None:
        partial = partial_layers(model)
        if partial is not None:
            raise ConfigError(
                f"this model holds decoder layers 0..{partial[0] - 1} of {partial[1]} only; it is written by streaming "
                f"its base checkpoint, and {base} is not a safetensors checkpoint holding {names[0]}"
            )
        model.save_pretrained(tmp)  # type: ignore[operator]
        return "save_pretrained"
    checkpoint = Checkpoint(base)  # type: ignore[arg-type]
    params = dict(model.named_parameters())
    tensors = {name: params[name] for name in names}
    lossy = _stored_dtype_loses(tensors, checkpoint, keys)
    if lossy:
        warnings.warn(
            f"the base checkpoint stores {', '.join(lossy)} in a narrower dtype than they were trained in; the model "
            "directory holds them rounded, rmu_delta.safetensors as trained",
            stacklevel=3,
        )
    write_patched(checkpoint, tmp, {keys[name]: t for name, t in tensors.items()})
    return "streamed"


def apply_delta_to_checkpoint(
    base: str | os.PathLike[str], path: str | os.PathLike[str], out: str | os.PathLike[str]
) -> list[str] | None:
    """Write into ``out`` the base checkpoint with a delta's tensors swapped in, by streaming (no model is
    loaded), after checking the delta was made from this base. None when ``base`` is not a safetensors
    checkpoint holding the delta's tensors (load the model and use :func:`apply_delta` then)."""
    tensors, meta = load_delta(path)
    if not has_safetensors(base):
        return None
    checkpoint = Checkpoint(base)
    # a checkpoint of the bare base model names its tensors without the base_model_prefix of the LM
    keys = {name: checkpoint.key(name, ("model", "transformer", "gpt_neox")) for name in tensors}
    if any(key is None for key in keys.values()):
        return None
    found = {name: checkpoint.read(key) for name, key in keys.items() if key is not None}
    wrong = [
        f"{n} {tuple(t.shape)} vs {tuple(found[n].shape)}" for n, t in tensors.items() if t.shape != found[n].shape
    ]
    if wrong:
        raise FormatError(f"{path}: tensor shapes differ from the base model's ({'; '.join(wrong)})")
    # the delta fingerprints the base's values as the run loaded them: as stored, or cast (--dtype)
    stored = base_fingerprint(found)
    cast = base_fingerprint({n: t.to(tensors[n].dtype) for n, t in found.items()})
    if meta["base_fingerprint"] not in (stored, cast):
        raise FormatError(
            f"{path} was made from another base model: the fingerprint of {sorted(tensors)} does not match"
        )
    write_patched(checkpoint, out, {key: tensors[name] for name, key in keys.items() if key is not None})
    return sorted(tensors)


def _summary(result: RMUResult, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    last = result.history[-1].to_dict() if result.history else None
    return {
        "config": result.config.to_dict(),
        "optimizer": result.config.optimizer_name,  # what ran (the config may leave it to the mode)
        "parameter_names": result.parameter_names,
        "steering_coeff_used": result.coefficients,
        "frozen_norm_at_layer": result.frozen_norms,
        "steps": len(result.history),
        "last_step": last,
        **(extra or {}),
    }


def save_tokenizer(
    out: str | os.PathLike[str],
    tokenizer: Any,
    base: str | os.PathLike[str] | None = None,
    *,
    trust_remote_code: bool = False,
) -> list[str]:
    """Write ``tokenizer`` into the model directory ``out`` so that it tokenizes as the base model's does.

    The base directory's tokenizer files are copied byte for byte where it has them (``save_pretrained``
    otherwise), and the written tokenizer must tokenize a fixed sample of texts exactly as ``tokenizer``
    does; a difference raises :class:`FormatError`. Returns the names of the files copied.
    """
    from transformers import AutoTokenizer

    copied = copy_tokenizer_files(base, out) if base is not None else []
    if not copied:
        tokenizer.save_pretrained(out)
    written = AutoTokenizer.from_pretrained(out, local_files_only=True, trust_remote_code=trust_remote_code)
    differ = tokenization_differences(written, tokenizer)
    if differ:
        raise FormatError(
            f"the tokenizer written to {out} tokenizes {len(differ)} sample texts differently from the base's "
            f"(first: {differ[0]!r}); nothing was written"
        )
    return copied


def save_unlearned(
    out: "str | os.PathLike[str] | OutputDir",
    model: nn.Module,
    tokenizer: Any,
    result: RMUResult,
    *,
    overwrite: bool = False,
    extra: Mapping[str, Any] | None = None,
    tokenizer_source: str | os.PathLike[str] | None = None,
    base: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the unlearned model directory: model + tokenizer, ``rmu_delta.safetensors``,
    ``control_vectors.safetensors`` (the ``--control-vectors`` format) and ``rmu_config.json``.

    With ``base`` (the base model's directory, safetensors), the weights are streamed from it with the updated
    tensors swapped in: same shards, same index, same config, and memory bounded by one chunk or one tensor;
    a model loaded with its first layers only is written this way. Otherwise ``save_pretrained`` writes them.
    ``tokenizer_source`` (the base model's directory) supplies the tokenizer files, copied byte for byte;
    see :func:`save_tokenizer`."""

    def fill(tmp: Path) -> None:
        how = write_model(tmp, model, result.parameter_names, base)
        if tokenizer is not None:
            save_tokenizer(tmp, tokenizer, tokenizer_source)
        save_delta(tmp / "rmu_delta.safetensors", model, result)
        save_directions(
            tmp / "control_vectors.safetensors",
            result.directions,
            layer=result.config.layer,
            coefficients=result.coefficients,
        )
        summary = {**_summary(result, extra), "weights_written": how}
        partial = partial_layers(model)
        if partial is not None:
            summary["layers_loaded"] = f"0..{partial[0] - 1} of {partial[1]}"
        (tmp / "rmu_config.json").write_text(json.dumps(summary, indent=2) + "\n")

    target = out if isinstance(out, OutputDir) else OutputDir(out, overwrite=overwrite, kind="unlearned model")
    return target.write(fill)
