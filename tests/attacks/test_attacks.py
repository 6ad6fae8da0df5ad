import json
from pathlib import Path

import pytest
import torch
from conftest import FORGET, N_LAYERS, RETAIN, make_model

import repe_unlearn as ru
from repe_unlearn.attacks import ablate, gcg_suffix, mean_difference, relearn
from repe_unlearn.attacks.suffix import _Batch, _score
from repe_unlearn.cli import main
from repe_unlearn.data import MCQItem


def lm_loss(model: torch.nn.Module, tokenizer: object, texts: list[str]) -> float:
    batch = next(ru.tokenize_batches(tokenizer, texts, len(texts)))
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        return float(model(**batch, labels=labels).loss)


def test_relearning_lowers_the_loss_on_its_corpus(tokenizer: object) -> None:
    model = make_model("llama")
    before = lm_loss(model, tokenizer, FORGET[:8])
    calls: list[int] = []
    result = relearn(
        model,
        tokenizer,
        FORGET[:8],
        steps=12,
        evaluate=lambda: {"n": float(len(calls.append(1) or calls))},
        lr=5e-3,
        batch_size=4,
        eval_every=4,
        progress=False,
    )
    assert lm_loss(model, tokenizer, FORGET[:8]) < 0.7 * before
    assert [p.step for p in result.curve] == [0, 4, 8, 12] and len(calls) == 4
    assert result.before == {"n": 1.0} and result.after == {"n": 4.0}
    assert all(p.requires_grad for p in model.parameters())


def test_relearning_only_chosen_tensors(tokenizer: object) -> None:
    model = make_model("llama")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    relearn(model, tokenizer, FORGET[:4], steps=2, evaluate=dict, params=["*.mlp.down_proj.weight"], progress=False)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {f"model.layers.{i}.mlp.down_proj.weight" for i in range(N_LAYERS)}
    with pytest.raises(ru.ConfigError, match="at least 1"):
        relearn(model, tokenizer, FORGET, steps=0, evaluate=dict, progress=False)
    with pytest.raises(ru.ConfigError, match="no parameter matches"):
        relearn(model, tokenizer, FORGET, steps=1, evaluate=dict, params=["nothing*"], progress=False)


def test_ablating_a_planted_additive_edit_restores_the_activations(tokenizer: object) -> None:
    """An edit h + 5r along a direction the model's activations do not use is undone exactly by ablating r."""
    model = make_model("llama")
    batch = next(ru.tokenize_batches(tokenizer, ["the cat sat on the mat"], 1))  # few tokens: r can avoid them all
    clean = ru.collect(model, batch, stop_after=False)
    acts = torch.cat([clean[i][batch["attention_mask"].bool()] for i in range(1, N_LAYERS)])
    r = torch.linalg.svd(acts, full_matrices=True).Vh[-1]  # orthogonal to every recorded activation
    assert float((acts @ r).abs().max()) < 1e-4
    with ru.ControlVector({1: 5 * r}).apply(model), ru.ablate_direction(model, r, range(1, N_LAYERS)):
        with ru.record(model) as attacked:
            model(**batch)
    for layer in range(1, N_LAYERS):
        torch.testing.assert_close(attacked[layer], clean[layer], rtol=1e-4, atol=1e-4)


def test_mean_difference_recovers_a_constant_shift(tokenizer: object) -> None:
    base, model = make_model("llama"), make_model("llama")
    shift = torch.randn(32)
    with torch.no_grad():
        ru.decoder_layers(model)[2].mlp.down_proj.bias = None
    ru.ControlVector({2: shift}).attach(model)
    torch.testing.assert_close(mean_difference(model, base, tokenizer, FORGET[:6], 2), shift, rtol=1e-5, atol=1e-5)
    result = ablate(model, shift, 2, evaluate=lambda: {"probe": float(len(ru.active_hooks(model)))})
    assert result.before == {"probe": 1.0} and result.after == {"probe": 2.0}  # the ablation hook was active
    assert len(ru.active_hooks(model)) == 1  # ... and is gone afterwards (the planted one stays)


def test_suffix_search_improves_its_own_objective(tokenizer: object) -> None:
    model = make_model("gpt2")
    items = [MCQItem(f"the town {i} has a", ("river", "bridge", "park", "market"), i % 4) for i in range(6)]
    found = gcg_suffix(
        model, tokenizer, items, length=3, steps=6, top_k=8, candidates=8, items_per_step=6, progress=False
    )
    assert found.objective[-1] >= found.objective[0]
    assert found.objective == sorted(found.objective)  # the current suffix is always a candidate
    assert tokenizer(found.text, add_special_tokens=False)["input_ids"] == found.ids  # type: ignore[operator]
    batch = _Batch(tokenizer, items, "cloze", torch.device("cpu"))
    final = float(_score(model, batch, torch.tensor([found.ids]))[0]) / len(items)
    assert final == pytest.approx(found.objective[-1], rel=1e-4)


def test_attack_cli_bad_input(tmp_path: Path, tokenizer: object, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_model("llama")
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")  # type: ignore[attr-defined]
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0}) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(RETAIN))
    common = ["--model", str(tmp_path / "m"), "--eval-mcq", str(tmp_path / "q.jsonl"), "--format", "cloze"]
    capsys.readouterr()
    cases = [
        (["attack", "relearn", *common, "--train", str(tmp_path / "t.txt"), "--steps", "0"], "positive integer"),
        (["attack", "ablate", *common, "--layer", "2", "--direction", "mean-diff"], "needs --base"),
        (["attack", "ablate", *common, "--layer", "2"], "no control vector at"),
        (["attack", "ablate", *common], "give --layer"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    assert (
        main(
            [
                "attack",
                "relearn",
                *common,
                "--train",
                str(tmp_path / "t.txt"),
                "--steps",
                "2",
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before  # the model on disk is untouched
    out = json.loads((tmp_path / "r.json").read_text())
    assert set(out) >= {"before", "after", "curve", "attack"} and out["attack"] == "relearn"


def test_lora_relearning_trains_adapters_only(tokenizer: object) -> None:
    pytest.importorskip("peft")
    model = make_model("llama")
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    before = lm_loss(model, tokenizer, FORGET[:8])
    result = relearn(
        model, tokenizer, FORGET[:8], steps=12, evaluate=dict, lr=1e-2, batch_size=4, lora_rank=4, progress=False
    )
    assert result.details["trained"] == "lora"
    assert lm_loss(model, tokenizer, FORGET[:8]) < 0.95 * before  # the adapters learned (4.59 -> 4.13)
    weights = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in model.named_parameters()}
    assert all(torch.equal(weights[n], value) for n, value in base.items())  # every original weight untouched
    assert any("lora_" in n for n, _ in model.named_parameters())


def test_lora_relearning_is_seeded(tokenizer: object) -> None:
    pytest.importorskip("peft")
    losses = []
    for _ in range(2):
        model = make_model("llama")
        torch.manual_seed(len(losses))  # a different global state each time: the seed alone must decide
        relearn(
            model, tokenizer, FORGET[:8], steps=3, evaluate=dict, lr=1e-2, batch_size=4, lora_rank=4, progress=False
        )
        losses.append(lm_loss(model, tokenizer, FORGET[:8]))
    assert losses[0] == losses[1]
