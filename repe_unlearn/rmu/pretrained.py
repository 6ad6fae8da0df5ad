"""RMU from a model directory to an unlearned model directory, holding only what the loss needs.

The loss stops at layer ℓ and only a few tensors below it change, so the model is built with decoder layers
0..ℓ alone (read from the safetensors checkpoint tensor by tensor: no later layer, no final norm, no LM head)
and the output directory is written by streaming the base checkpoint with the updated tensors swapped in.
Peak memory is about the bytes of layers 0..ℓ and the embeddings, not the model's.
"""

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from .._loading import checkpoint_depth, load_causal_lm
from .._outputs import OutputDir
from .._vectors import ControlVector
from .artifacts import check_streamable, save_unlearned
from .config import ADVERSARIAL, RMUConfig
from .trainer import RMUResult, StepLog, unlearn


def unlearn_from_pretrained(
    path: str | os.PathLike[str],
    forget: Sequence[Sequence[str]],
    retain: Sequence[Sequence[str]],
    config: RMUConfig | None = None,
    *,
    out: str | os.PathLike[str],
    overwrite: bool = False,
    dtype: str | None = None,
    device: str | None = None,
    full_model: bool = False,
    control_vectors: Sequence[ControlVector | Tensor] | Tensor | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
    on_step: Callable[[StepLog], None] | None = None,
) -> RMUResult:
    """Unlearn the model in ``path`` with RMU and write the unlearned model directory ``out``.

    Args:
        path: a local HuggingFace model directory (safetensors weights, tokenizer).
        forget: one list of documents per forget corpus.
        retain: one list of documents per forget corpus.
        config: hyperparameters (``RMUConfig()`` when omitted; see :func:`preset`).
        out: the output directory (refused if it exists, unless ``overwrite`` and this tool wrote it).
        overwrite: replace an ``out`` this tool wrote before.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (default: as saved).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... or ``"auto"``.
        full_model: load every layer and the LM head (the output is still streamed when the base allows).
        control_vectors: one direction per forget corpus (see :func:`unlearn`).
        trust_remote_code: allow model code from ``path``.
        progress: show a progress bar.
        on_step: called with each step's :class:`StepLog`.

    Returns:
        The :class:`RMUResult`; the directory ``out`` holds the model, ``rmu_delta.safetensors``,
        ``control_vectors.safetensors`` and ``rmu_config.json``.
    """
    from transformers import AutoTokenizer

    config = (config or RMUConfig()).resolved(checkpoint_depth(path, trust_remote_code=trust_remote_code))
    target = OutputDir(out, overwrite=overwrite, inputs=[path], kind="unlearned model")  # checked before any compute
    model = load_causal_lm(
        str(path),
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        first_layers=None if full_model or config.method in ADVERSARIAL else config.layer + 1,
    )
    check_streamable(model, config, path)
    tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    result = unlearn(
        model, tokenizer, forget, retain, config, control_vectors=control_vectors, progress=progress, on_step=on_step
    )
    save_unlearned(
        target,
        model,
        tokenizer,
        result,
        extra={"base_model": str(Path(path).resolve())},
        tokenizer_source=path,
        base=path,
    )
    return result


__all__ = ["unlearn_from_pretrained"]
