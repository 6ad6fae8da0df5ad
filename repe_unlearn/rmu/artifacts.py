"""What RMU leaves on disk: the model (``save_pretrained``), the delta, the control vectors, the config.

The delta holds only the updated tensors plus a fingerprint of the base model's values of those tensors,
so ``apply_delta`` can refuse a base it was not made from. Outputs are written to a temporary directory
beside the target and moved into place at the end (see :mod:`repe_unlearn._outputs`): an interrupted run
leaves nothing half-written, and nothing this tool did not write is ever deleted.
"""

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._io import load_tensors, save_tensors
from .._outputs import OutputDir
from .._tokenizer_files import copy_tokenizer_files, tokenization_differences
from ..errors import FormatError
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
) -> Path:
    """Write the unlearned model directory: model + tokenizer, ``rmu_delta.safetensors``,
    ``control_vectors.safetensors`` (the ``--control-vectors`` format) and ``rmu_config.json``.

    ``tokenizer_source`` (the base model's directory) supplies the tokenizer files, copied byte for byte;
    see :func:`save_tokenizer`."""

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)  # type: ignore[operator]
        if tokenizer is not None:
            save_tokenizer(tmp, tokenizer, tokenizer_source)
        save_delta(tmp / "rmu_delta.safetensors", model, result)
        save_directions(tmp / "control_vectors.safetensors", result.directions)
        (tmp / "rmu_config.json").write_text(json.dumps(_summary(result, extra), indent=2) + "\n")

    target = out if isinstance(out, OutputDir) else OutputDir(out, overwrite=overwrite)
    return target.write(fill)
