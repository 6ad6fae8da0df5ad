"""Digests of the tensors plain RMU produces on tiny models, recorded before RMU gained other methods.

``python tests/rmu/plain_rmu_digests.py`` prints them, each with the fingerprint of its inputs, for the code as it
is now; tests/rmu/test_methods.py asserts today's plain RMU still produces exactly these bytes. The inputs (the
tiny models' initial weights, the tokens of the texts) come from transformers and tokenizers, whose releases may
change them; so the digests are recorded per input fingerprint, each by running this script on a checkout of
c89ce9c (the code before the methods) with ``PYTHONPATH`` pointing there.
"""

import hashlib
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import FORGET, RETAIN, make_model

from repe_unlearn import rmu

CASES: dict[str, dict[str, Any]] = {
    "llama, one epoch": {"arch": "llama", "config": {}},
    "llama, 3 epochs from the epoch cache, adaptive c": {
        "arch": "llama",
        "config": {"epochs": 3, "adaptive_coeff": 2.0, "steering_coeff": (1.0,)},
    },
    "gpt2, reference mode": {"arch": "gpt2", "config": {"reference_mode": True}},
}
BASE: dict[str, Any] = {
    "layer": 2,
    "steering_coeff": (5.0,),
    "alpha": (10.0,),
    "lr": 1e-2,
    "batch_size": 4,
    "max_batches": 4,
    "max_length": 16,
}


def inputs(case: str, tokenizer: Any) -> str:
    """SHA-256 of what the environment makes of ``case``'s inputs: the initial weights and the texts' tokens."""
    h = hashlib.sha256()
    for p in make_model(CASES[case]["arch"]).parameters():
        h.update(p.detach().float().contiguous().numpy().tobytes())
    for text in (FORGET, RETAIN):
        h.update(str(tokenizer(text)["input_ids"]).encode())
    return h.hexdigest()


def digest(case: str, tokenizer: Any) -> str:
    """SHA-256 of the updated tensors' bytes, in parameter order, after plain RMU on ``case``."""
    spec = CASES[case]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one reduction order whatever the machine's cores
    try:
        model = make_model(spec["arch"])
        config = rmu.RMUConfig(**{**BASE, **spec["config"]})
        result = rmu.unlearn(model, tokenizer, [FORGET], [RETAIN], config, progress=False)
    finally:
        torch.set_num_threads(threads)
    params = dict(model.named_parameters())
    h = hashlib.sha256()
    for name in result.parameter_names:
        h.update(params[name].detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    import conftest

    tok = conftest.tokenizer.__wrapped__()  # type: ignore[attr-defined]
    for case in CASES:
        print(f"{case!r}: {{{inputs(case, tok)!r}: {digest(case, tok)!r}}},")
