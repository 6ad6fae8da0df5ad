"""The robustness battery: held-out questions never trained on or shown, the model never changed."""

import pytest
import torch
from conftest import make_model

import repe_unlearn as ru
from repe_unlearn.data import MCQItem, read_mcq, read_texts
from repe_unlearn.robustness import battery, held_out_split
from repe_unlearn.toy import SHIPPED_WORLD


def test_the_toy_worlds_split_keeps_relearned_entities_out_of_the_scores() -> None:
    items = read_mcq(SHIPPED_WORLD / "forget_cloze.jsonl")
    texts = read_texts(SHIPPED_WORLD / "forget_a.jsonl")
    held_out, trained = held_out_split(items, texts)
    held = {i.entity for i in held_out}
    assert len(held) == 25 and len({i.entity for i in trained}) == 25 and not held & {i.entity for i in trained}
    assert not any(name in text for name in held if name for text in texts)  # no held-out name in training text
    assert {i.entity for i in read_mcq(SHIPPED_WORLD / "forget_b_cloze.jsonl")} == held
    with pytest.raises(ru.ConfigError, match="every forget entity"):
        held_out_split(items, read_texts(SHIPPED_WORLD / "forget.jsonl"))
    with pytest.raises(ru.ConfigError, match="no forget entity"):
        held_out_split(items, read_texts(SHIPPED_WORLD / "retain.jsonl"))
    with pytest.raises(ru.ConfigError, match="'entity' field"):
        held_out_split([MCQItem("q", ("a", "b"), 0)], texts)


def items(names: list[str], relation: str) -> list[MCQItem]:
    return [MCQItem(f"{n} {relation}", ("water", "air", "soil"), i % 3, n) for i, n in enumerate(names)]


def test_the_battery_runs_on_a_copy_and_reports(tokenizer: object) -> None:
    model = make_model("llama")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    forget = items([f"virus {i}" for i in range(1, 9)], "spreads through")
    retain = items(["town 1", "town 2"], "lies on")
    relearn_texts = [f"the virus {i} spreads through water" for i in range(1, 6)]
    unrelated_texts = ["the town 1 lies on a river", "the town 2 lies on a hill"]
    seen: list[str] = []
    result = battery(
        model, tokenizer, forget_items=forget, retain_items=retain, relearn_texts=relearn_texts,
        unrelated_texts=unrelated_texts, base=make_model("llama", seed=1), format="cloze",
        attacks=["relearn", "unrelated", "few-shot", "quantize"], progress=False,
        on_attack=lambda row: seen.append(row.attack),
    )  # fmt: skip
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # never changed
    names = ["relearn", "unrelated", "few-shot-1", "few-shot-3", "few-shot-5"]
    names += ["quantize-int8-per-channel", "quantize-int4-per-channel", "quantize-int4-group"]
    assert [row.attack for row in result.rows] == names == seen
    assert result.held_out_entities == ["virus 6", "virus 7", "virus 8"]
    assert result.trained_entities == [f"virus {i}" for i in range(1, 6)]
    assert len({row.forget_before for row in result.rows}) == 1  # every attack starts from the same score
    record = result.to_dict()
    assert set(record) >= {"attacks", "base", "chance", "verdict"} and record["chance"] == pytest.approx(1 / 3)
    assert "| relearn |" in result.markdown() and result.verdict() in result.markdown()
    with pytest.raises(ru.ConfigError, match="held-out entities"):
        battery(model, tokenizer, forget_items=forget, retain_items=retain, relearn_texts=relearn_texts,
                unrelated_texts=["the virus 7 is everywhere"], attacks=["unrelated"], progress=False)  # fmt: skip
    with pytest.raises(ru.ConfigError, match="unknown attack"):
        battery(model, tokenizer, forget_items=forget, retain_items=retain, relearn_texts=relearn_texts,
                unrelated_texts=unrelated_texts, attacks=["telepathy"], progress=False)  # fmt: skip


def test_robustness_cli_writes_the_report(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from repe_unlearn.cli import main
    from repe_unlearn.toy import SHIPPED_MODEL

    weights = (SHIPPED_MODEL / "model.safetensors").read_bytes()
    argv = ["robustness", "--model", str(SHIPPED_MODEL), "--base", str(SHIPPED_MODEL)]
    argv += ["--forget-mcq", str(SHIPPED_WORLD / "forget_cloze.jsonl")]
    argv += ["--retain-mcq", str(SHIPPED_WORLD / "retain_cloze.jsonl")]
    argv += ["--relearn-texts", str(SHIPPED_WORLD / "forget_a.jsonl")]
    argv += ["--unrelated-texts", str(SHIPPED_WORLD / "retain.jsonl")]
    assert main([*argv, "--attacks", "few-shot,quantize", "--out", str(tmp_path / "r")]) == 0
    record = json.loads((tmp_path / "r" / "robustness.json").read_text())
    assert set(record["attacks"]) == {
        "few-shot-1", "few-shot-3", "few-shot-5",
        "quantize-int8-per-channel", "quantize-int4-per-channel", "quantize-int4-group",
    }  # fmt: skip
    assert len(record["held_out_entities"]) == 25 and record["base"]["forget"] == 1.0
    assert record["verdict"] in (tmp_path / "r" / "report.md").read_text()
    assert (tmp_path / "r" / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    assert (SHIPPED_MODEL / "model.safetensors").read_bytes() == weights  # the models on disk are untouched
    capsys.readouterr()
    assert main([*argv, "--attacks", "telepathy", "--out", str(tmp_path / "x")]) == 2
    assert "unknown attack" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_rephrased_questions_are_scored_on_held_out_entities_only(tokenizer: object) -> None:
    model = make_model("llama")
    forget = items([f"virus {i}" for i in range(1, 9)], "spreads through")
    relearn_texts = [f"the virus {i} spreads through water" for i in range(1, 6)]
    rephrased = items([f"virus {i}" for i in range(1, 9)], "is carried by")
    common = dict(
        forget_items=forget, retain_items=items(["town 1"], "lies on"), relearn_texts=relearn_texts,
        unrelated_texts=["the town 1 lies on a river"], attacks=["rephrased"], progress=False,
    )  # fmt: skip
    result = battery(model, tokenizer, rephrased_items=rephrased, **common)  # type: ignore[arg-type]
    [row] = result.rows
    assert row.attack == "rephrased" and row.details["questions"] == 3  # viruses 6-8 only
    with pytest.raises(ru.ConfigError, match="asked for"):  # named but no rephrased file: said, not skipped
        battery(model, tokenizer, **common)  # type: ignore[arg-type]
    with pytest.raises(ru.ConfigError, match="held-out entity"):
        battery(model, tokenizer, rephrased_items=rephrased[:5], **common)  # type: ignore[arg-type]


def test_the_probe_row_is_fit_on_trained_entities_and_scored_on_held_out_ones() -> None:
    from repe_unlearn.toy import load_shipped_model

    model, tokenizer = load_shipped_model()
    result = battery(
        model, tokenizer, forget_items=read_mcq(SHIPPED_WORLD / "forget_cloze.jsonl"),
        retain_items=read_mcq(SHIPPED_WORLD / "retain_cloze.jsonl")[:8],
        relearn_texts=read_texts(SHIPPED_WORLD / "forget_a.jsonl"), unrelated_texts=["A town lies on a river."],
        base=model, rephrased_items=read_mcq(SHIPPED_WORLD / "forget_rephrased_cloze.jsonl"), format="cloze",
        attacks=["probe", "rephrased"], progress=False,
    )  # fmt: skip
    probe, rephrased = result.rows
    assert probe.attack == "probe" and probe.details["trained_on"] == 100  # 25 relearned entities x 4 facts
    assert len(probe.details["per_layer"]) == 6
    assert probe.forget_after == pytest.approx(max(probe.details["per_layer"]), abs=1e-4)
    assert probe.forget_after > 0.5  # the base model's last layers say the answer: the probe reads it
    assert probe.details["base_forget"] == pytest.approx(probe.forget_after)  # base = model here
    assert rephrased.details["questions"] == 25 * 4 * 2  # two rephrased stems per fact, held-out entities only
    assert rephrased.details["base_forget"] == rephrased.forget_after
    assert result.base_for(rephrased) == rephrased.forget_after  # compared with the base asked the same way
    assert "| probe |" in result.markdown() and "<td>probe</td>" in result._repr_html_()


def test_the_probe_searches_only_layers_the_unlearning_changed() -> None:
    """Below the first changed layer the activations are the base model's: a probe there would read the facts
    back by construction, so the battery searches from that layer on (and says which layers it searched)."""
    import copy

    from repe_unlearn.robustness import _first_changed_layer
    from repe_unlearn.toy import load_shipped_model

    base, tokenizer = load_shipped_model()
    changed = copy.deepcopy(base)
    assert _first_changed_layer(changed, base) is None
    with torch.no_grad():
        changed.model.norm.weight.mul_(1.5)  # after every layer: no layer's output changes
    assert _first_changed_layer(changed, base) is None
    with torch.no_grad():
        for layer in (3, 4):
            changed.model.layers[layer].mlp.down_proj.weight.mul_(0.5)
    assert _first_changed_layer(changed, base) == 3
    embedded = copy.deepcopy(base)
    with torch.no_grad():
        embedded.model.embed_tokens.weight.add_(0.01)  # tied to the unembedding, and below every layer
    assert _first_changed_layer(embedded, base) == 0
    result = battery(
        changed, tokenizer, forget_items=read_mcq(SHIPPED_WORLD / "forget_cloze.jsonl"),
        retain_items=read_mcq(SHIPPED_WORLD / "retain_cloze.jsonl")[:8],
        relearn_texts=read_texts(SHIPPED_WORLD / "forget_a.jsonl"), unrelated_texts=["A town lies on a river."],
        base=base, format="cloze", attacks=["probe"], progress=False,
    )  # fmt: skip
    (probe,) = result.rows
    assert probe.details["first_changed_layer"] == 3 and probe.details["layers_searched"] == [3, 5]
    assert probe.details["layer"] >= 3
    assert probe.forget_after == pytest.approx(probe.details["per_layer"][probe.details["layer"]], abs=1e-4)


def test_a_probe_scored_on_rows_it_trained_on_would_be_seen() -> None:
    from repe_unlearn.diagnostics import fit_probe

    generator = torch.Generator().manual_seed(0)
    features, labels = torch.randn(120, 64, generator=generator), torch.randint(0, 4, (120,), generator=generator)
    apart = fit_probe(features, labels, n_classes=4, indices=(torch.arange(80), torch.arange(80, 120)))
    assert apart.train_accuracy == 1.0 and apart.test_accuracy < 0.45  # random labels: chance on unseen rows
    with pytest.raises(ru.ConfigError, match="overlap"):
        fit_probe(features, labels, n_classes=4, indices=(torch.arange(100), torch.arange(80, 120)))
