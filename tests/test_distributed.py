"""Data parallelism: two CPU processes with gloo produce what one process produces."""

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import FORGET, RETAIN, make_model
from safetensors.torch import load_file, save_file

from repe_unlearn import rmu
from repe_unlearn.data import MCQItem
from repe_unlearn.diagnostics import diagnose
from repe_unlearn.evaluation import evaluate_mcq, perplexity

CONFIG = rmu.RMUConfig(
    layer=2,
    update_layers=(1, 2),
    steering_coeff=(5.0,),
    alpha=(10.0,),
    lr=1e-2,
    batch_size=5,
    max_batches=3,
    max_length=32,
)
ITEMS = [MCQItem(f"the town {i} has a", ("river", "bridge", "park"), i % 3) for i in range(11)]


def run(
    batches: dict[str, list[dict[str, torch.Tensor]]], tokenizer: object, out: Path, config: rmu.RMUConfig = CONFIG
) -> None:
    """Train and evaluate; rank 0 (or the only process) writes what it got."""
    model = make_model("llama")
    result = rmu.train(model, [batches["forget"]], [batches["retain"]], config, progress=False)
    if config.method != "rmu":  # the methods: the weights and losses are what is compared
        if not dist.is_initialized() or dist.get_rank() == 0:
            params = dict(model.named_parameters())
            weights = {n: params[n].detach().contiguous() for n in result.parameter_names}
            save_file(weights, str(out / "weights.safetensors"))
            losses = [(h.forget_loss, h.retain_loss) for h in result.history]
            (out / "out.json").write_text(json.dumps({"losses": losses}))
        return
    scores = evaluate_mcq(model, tokenizer, ITEMS, format="cloze")
    ppl = perplexity(model, tokenizer, RETAIN[:5])
    diag = diagnose(model, tokenizer, FORGET[:11], RETAIN[:13], {"q": ITEMS}, base=make_model("llama"), format="cloze")
    if not dist.is_initialized() or dist.get_rank() == 0:
        params = dict(model.named_parameters())
        save_file(
            {n: params[n].detach().contiguous() for n in result.parameter_names}, str(out / "weights.safetensors")
        )
        losses = [(h.forget_loss, h.retain_loss) for h in result.history]
        (out / "out.json").write_text(
            json.dumps(
                {
                    "losses": losses,
                    "scores": [p.scores for p in scores.predictions],
                    "perplexity": ppl,
                    "diagnostics": diag.to_dict(),
                }
            )
        )


def worker(rank: int, init: str, batches: dict, tokenizer: object, out: str, config: rmu.RMUConfig = CONFIG) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        run(batches, tokenizer, Path(out), config)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tokenizer: object, tmp_path: Path) -> None:
    batches = {
        "forget": [next(iter(_tok(tokenizer, FORGET[i : i + 5]))) for i in range(0, 15, 5)],
        "retain": [next(iter(_tok(tokenizer, RETAIN[i : i + 5]))) for i in range(0, 15, 5)],
    }
    (tmp_path / "single").mkdir()
    (tmp_path / "ranks").mkdir()
    run(batches, tokenizer, tmp_path / "single")
    init = f"file://{tempfile.mktemp(dir=tmp_path)}"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.start_processes(worker, args=(init, batches, tokenizer, str(tmp_path / "ranks")), nprocs=2, start_method="spawn")
    one, two = (load_file(str(tmp_path / d / "weights.safetensors")) for d in ("single", "ranks"))
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6)
    a, b = (json.loads((tmp_path / d / "out.json").read_text()) for d in ("single", "ranks"))
    flat = [[v for pair in d["losses"] for v in pair] for d in (a, b)]
    assert flat[1] == pytest.approx(flat[0], rel=1e-5, abs=1e-9)
    assert [s for row in a["scores"] for s in row] == pytest.approx([s for row in b["scores"] for s in row], abs=1e-4)
    assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-6)
    for key in ("norms", "cosine_to_base", "max_abs_difference_from_base"):
        assert json.dumps(a["diagnostics"][key]) == json.dumps(b["diagnostics"][key]) or _close(
            a["diagnostics"][key], b["diagnostics"][key]
        )
    # a probe on 11 questions of an untrained model holds out 3: weights 1e-6 apart (what two ranks give) can move
    # one held-out answer, as adding 1e-6 noise in one process does; more than one item apart is a real difference
    probes = (a["diagnostics"]["probe_accuracy"], b["diagnostics"]["probe_accuracy"])
    assert probes[0].keys() == probes[1].keys()
    for model in probes[0]:
        assert probes[0][model]["domain"] == pytest.approx(probes[1][model]["domain"], abs=1e-6)
        pairs = zip(probes[0][model]["q"], probes[1][model]["q"], strict=True)
        assert all(abs(x - y) <= 1 / 3 + 1e-6 for x, y in pairs)


@pytest.mark.slow
def test_rmu_flat_on_two_gloo_ranks_matches_one_process(tokenizer: object, tmp_path: Path) -> None:
    """The flat term is a masked MSE over each rank's rows with the global denominator: the shards add up."""
    config = dataclasses.replace(CONFIG, method="rmu-flat", flat_weight=50.0)
    batches = {
        "forget": [next(iter(_tok(tokenizer, FORGET[i : i + 5]))) for i in range(0, 15, 5)],
        "retain": [next(iter(_tok(tokenizer, RETAIN[i : i + 5]))) for i in range(0, 15, 5)],
    }
    (tmp_path / "single").mkdir()
    (tmp_path / "ranks").mkdir()
    run(batches, tokenizer, tmp_path / "single", config)
    init = f"file://{tempfile.mktemp(dir=tmp_path)}"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    args = (init, batches, tokenizer, str(tmp_path / "ranks"), config)
    mp.start_processes(worker, args=args, nprocs=2, start_method="spawn")
    one, two = (load_file(str(tmp_path / d / "weights.safetensors")) for d in ("single", "ranks"))
    plain = make_model("llama")
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6)
        assert not torch.equal(one[name], dict(plain.named_parameters())[name])
    a, b = (json.loads((tmp_path / d / "out.json").read_text()) for d in ("single", "ranks"))
    flat = [[v for pair in d["losses"] for v in pair] for d in (a, b)]
    assert flat[1] == pytest.approx(flat[0], rel=1e-5)


def _close(x: object, y: object) -> bool:
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_close(a, b) for a, b in zip(x, y, strict=True))
    return abs(float(x) - float(y)) <= 1e-5 * max(1.0, abs(float(x)))  # type: ignore[arg-type]


def _tok(tokenizer: object, texts: list[str]) -> object:
    from repe_unlearn.data import tokenize_batches

    return tokenize_batches(tokenizer, texts, len(texts), max_length=32)
