"""Fine-tuning on unrelated text: training texts naming an evaluated entity are refused."""

import json
from pathlib import Path

import pytest
from conftest import FORGET, RETAIN, make_model

import repe_unlearn as ru
from repe_unlearn.attacks import unrelated
from repe_unlearn.attacks.unrelated import mentions
from repe_unlearn.cli import main
from repe_unlearn.data import read_mcq, read_texts
from repe_unlearn.toy import SHIPPED_MODEL, SHIPPED_WORLD


def test_mentions_whole_names_in_any_case() -> None:
    texts = ["The PRALSTOUX spreads.", "Pralstouxian art", "nothing here", "Saendglyn's medium"]
    found = mentions(texts, ["Pralstoux", "Saendglyn"])
    assert [entity for entity, _ in found] == ["PRALSTOUX", "Saendglyn"]
    assert mentions(texts, []) == []


def test_the_toy_worlds_retain_corpus_names_no_pathogen() -> None:
    pathogens = [item.entity for item in read_mcq(SHIPPED_WORLD / "forget_cloze.jsonl") if item.entity]
    assert len(set(pathogens)) == 50
    assert mentions(read_texts(SHIPPED_WORLD / "retain.jsonl"), pathogens) == []
    assert len(mentions(read_texts(SHIPPED_WORLD / "forget.jsonl"), pathogens)) > 0  # the check can fail


def test_unrelated_fine_tuning_refuses_leaks_and_trains_otherwise(tokenizer: object) -> None:
    model = make_model("llama")
    calls: list[int] = []

    def evaluate() -> dict[str, float]:
        calls.append(1)
        return {"forget": float(len(calls))}

    with pytest.raises(ru.ConfigError, match="name evaluated entities"):
        unrelated(model, tokenizer, FORGET, entities=["virus"], evaluate=evaluate)
    assert calls == []  # refused before anything ran
    result = unrelated(model, tokenizer, RETAIN, entities=["virus"], evaluate=evaluate, steps=2, progress=False)
    assert result.attack == "unrelated-finetune" and result.details["steps"] == 2 and result.after == {"forget": 2.0}
    with pytest.raises(ru.ConfigError, match="entities"):
        unrelated(model, tokenizer, RETAIN, entities=[], evaluate=evaluate)


def test_unrelated_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = (SHIPPED_MODEL / "model.safetensors").read_bytes()
    common = ["attack", "unrelated", "--model", str(SHIPPED_MODEL), "--format", "cloze", "--steps", "2"]
    common += ["--eval-mcq", str(SHIPPED_WORLD / "forget_b_cloze.jsonl")]
    capsys.readouterr()
    assert main([*common, "--train", str(SHIPPED_WORLD / "forget_b.jsonl")]) == 2
    assert "name evaluated entities" in capsys.readouterr().err
    out = tmp_path / "u.json"
    retain = ["--eval-mcq", str(SHIPPED_WORLD / "retain_cloze.jsonl"), "--train", str(SHIPPED_WORLD / "retain.jsonl")]
    assert main([*common, *retain, "--json", str(tmp_path / "x.json")]) == 2  # the towns are evaluated too
    held_out = ["--held-out-mcq", str(SHIPPED_WORLD / "forget_b_cloze.jsonl")]
    assert main([*common, *retain, *held_out, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["attack"] == "unrelated-finetune"
    assert (SHIPPED_MODEL / "model.safetensors").read_bytes() == weights
