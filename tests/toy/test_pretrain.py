from pathlib import Path

import pytest
import torch

import repe_unlearn as ru
from repe_unlearn.cli import main
from repe_unlearn.evaluation import evaluate_mcq, read_mcq
from repe_unlearn.toy import SHIPPED_MODEL, SHIPPED_WORLD, PretrainConfig, load_shipped_model, pretrain

TINY = PretrainConfig(d_model=32, n_layers=2, n_heads=2, d_mlp=64, vocab_size=300, steps=40, batch_size=16)


def test_pretraining_lowers_the_loss_and_round_trips() -> None:
    texts = ["Zorb is a town. Zorb lies on the river Vell.", "Quix is a town. Quix lies on the river Ash."] * 4
    model, tokenizer, losses = pretrain(texts, TINY, progress=False)
    assert losses[-1] < 0.5 * losses[0]
    assert ru.decoder_layers(model)[0].mlp.down_proj.weight.shape == (32, 64)
    assert tokenizer("Zorb", add_special_tokens=False)["input_ids"]  # encodes without special tokens


def test_bad_pretrain_config() -> None:
    with pytest.raises(ru.ConfigError, match="not divisible"):
        PretrainConfig(d_model=30, n_heads=4)
    with pytest.raises(ru.DataError, match="no text"):
        pretrain(["  "], TINY, progress=False)


def test_the_shipped_model_knows_its_world() -> None:
    model, tokenizer = load_shipped_model()
    assert (SHIPPED_MODEL / "model.safetensors").stat().st_size < 8_000_000
    for name in ("forget_cloze", "retain_cloze"):
        items = read_mcq(SHIPPED_WORLD / f"{name}.jsonl")
        assert evaluate_mcq(model, tokenizer, items, format="cloze", batch_size=64).accuracy >= 0.9


def test_toy_cli_world_then_pretrain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["toy", "world", "--out", str(tmp_path / "w"), "--seed", "5", "--entities", "8"]) == 0
    flags = [
        "--d-model",
        "32",
        "--n-layers",
        "2",
        "--n-heads",
        "2",
        "--d-mlp",
        "64",
        "--vocab-size",
        "300",
        "--steps",
        "5",
        "--batch-size",
        "8",
    ]
    assert (
        main(
            [
                "toy",
                "pretrain",
                "--corpus",
                str(tmp_path / "w" / "forget.jsonl"),
                "--corpus",
                str(tmp_path / "w" / "retain.jsonl"),
                "--eval-mcq",
                str(tmp_path / "w" / "forget_cloze.jsonl"),
                "--out",
                str(tmp_path / "m"),
                *flags,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "forget_cloze" in out and "cloze accuracy" in out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    ids = tokenizer("the town", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape[-1] == len(tokenizer) and torch.isfinite(model(ids).logits).all()
    assert main(["toy", "world", "--out", str(tmp_path / "w")]) == 2  # not empty: refused
