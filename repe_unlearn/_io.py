"""Tensors on disk: safetensors files whose header carries this package's metadata as JSON.

No pickle is ever written or loaded. Writes are atomic (a temporary file renamed into place) and refuse to
replace an existing file unless asked, so nothing a user had is lost.
"""

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import FormatError

_META_KEY = "repe_unlearn"


def save_tensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``tensors`` and JSON ``metadata`` (must contain a ``kind``) to a safetensors file."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if path.parent and not path.parent.is_dir():
        raise FileNotFoundError(f"directory {path.parent} does not exist; create it first")
    header = {_META_KEY: json.dumps(dict(metadata), sort_keys=True)}
    plain = {k: t.detach().to("cpu").contiguous().clone() for k, t in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(plain, tmp, metadata=header)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes it private; a new file should look like any other
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and raw header metadata of any safetensors file (no pickle involved)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, OSError, ValueError) as exc:
        raise FormatError(f"{path} is not a valid safetensors file ({exc})") from None
    return tensors, header


def load_tensors(
    path: str | os.PathLike[str], *, kind: str | tuple[str, ...]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_tensors` whose metadata ``kind`` is ``kind`` (or one of them)."""
    kinds = (kind,) if isinstance(kind, str) else kind
    kind = " or ".join(repr(k) for k in kinds)
    tensors, header = read_safetensors(path)
    try:
        metadata = json.loads(header[_META_KEY])
    except (KeyError, json.JSONDecodeError):
        raise FormatError(
            f"{path} is a safetensors file but was not written by repe_unlearn (no '{_META_KEY}' metadata); "
            f"expected a {kind} file"
        ) from None
    if metadata.get("kind") not in kinds:
        raise FormatError(f"{path} holds a {metadata.get('kind')!r}, expected a {kind}")
    return tensors, metadata
