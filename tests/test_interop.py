"""Vectors across tools, each checked with the real other package (lm-eval, gguf, repeng, steering-vectors)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_model

import repe_unlearn as ru
from repe_unlearn import interop
from repe_unlearn.cli import main
from repe_unlearn.toy import SHIPPED_WORLD, load_shipped_model

DOC_TO_TEXT = (  # lm-eval's WMDP template (tasks/wmdp/_default_template_yaml)
    "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
)


def random_vector(layer: int, d: int, seed: int = 0) -> ru.ControlVector:
    direction = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return ru.ControlVector({layer: direction / direction.norm()})


def task(directory: Path, items: Path) -> Path:
    lines = [
        "task: toy_steered", "dataset_path: json", "dataset_kwargs:", "  data_files:", f"    test: {items}",
        "test_split: test", "num_fewshot: 0", "output_type: multiple_choice", f"doc_to_text: {json.dumps(DOC_TO_TEXT)}",
        'doc_to_choice: ["A", "B", "C", "D"]', "doc_to_target: answer", "metric_list:", "  - metric: acc",
        "    aggregation: mean", "    higher_is_better: true", "metadata:", "  version: 1",
    ]  # fmt: skip
    directory.mkdir()
    (directory / "toy_steered.yaml").write_text("\n".join(lines) + "\n")
    return directory


def lm_eval_predictions(model_dir: Path, steer: Path, tasks: Path, out: Path) -> list[int]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    argv = [sys.executable, "-m", "lm_eval", "--model", "steered"]
    argv += ["--model_args", f"pretrained={model_dir},steer_path={steer},dtype=float32", "--tasks", "toy_steered"]
    argv += ["--include_path", str(tasks), "--device", "cpu", "--batch_size", "8", "--log_samples"]
    run = subprocess.run([*argv, "--output_path", str(out)], env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    samples = [json.loads(line) for line in next(out.rglob("samples_toy_steered_*.jsonl")).read_text().splitlines()]
    predictions = {}
    for sample in samples:
        lls = [float(resp[0]) for resp in sample["filtered_resps"]]
        predictions[sample["doc_id"]] = max(range(len(lls)), key=lls.__getitem__)
    return [predictions[i] for i in range(len(predictions))]


def test_lm_eval_steered_and_repe_unlearn_eval_steer_agree_item_by_item(tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    items = tmp_path / "items.jsonl"
    items.write_text("".join((SHIPPED_WORLD / "forget_letter.jsonl").read_text().splitlines(True)[:48]))
    model_dir = random_model(tmp_path / "model", items)  # the toy model answers every letter question "B"
    vector_file = tmp_path / "v.safetensors"
    random_vector(2, 64).save(vector_file)
    steer = tmp_path / "steer.pt"
    argv = ["vector", "export", f"{vector_file}:3", "--to", "lm-eval", "--model", str(model_dir)]
    assert main([*argv, "--out", str(steer)]) == 0
    theirs = lm_eval_predictions(model_dir, steer, task(tmp_path / "tasks", items), tmp_path / "out")
    ours = {}
    for label, extra in (("steered", ["--steer", f"{vector_file}:3"]), ("plain", [])):
        preds = tmp_path / f"{label}.jsonl"
        argv = ["eval", "--model", str(model_dir), "--mcq", str(items), "--predictions", str(preds), *extra]
        assert main(argv) == 0
        ours[label] = [json.loads(line)["pred"] for line in preds.read_text().splitlines()]
    assert len(theirs) == 48 and ours["steered"] == theirs  # the same prediction on every item
    assert ours["plain"] != theirs  # the steering changes predictions, so agreement is not an accident


def random_model(directory: Path, items: Path) -> Path:
    """A randomly initialised 3-layer Llama whose tokenizer knows the prompts (predictions vary by item)."""
    import transformers as tf

    from repe_unlearn.data import letter_prompt, read_mcq
    from repe_unlearn.toy import train_tokenizer

    tokenizer = train_tokenizer([letter_prompt(item) + " A B C D" for item in read_mcq(items)], 400)
    torch.manual_seed(0)
    config = tf.LlamaConfig(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128, vocab_size=len(tokenizer),
        max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip
    tf.LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_gguf_round_trip_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gguf")
    vector = random_vector(2, 64) + random_vector(4, 64, seed=1)
    vector.save(tmp_path / "v.safetensors")
    assert (
        main(["vector", "export", str(tmp_path / "v.safetensors"), "--to", "gguf", "--out", str(tmp_path / "v.gguf")])
        == 0
    )
    assert main(["vector", "import", str(tmp_path / "v.gguf"), "--out", str(tmp_path / "back.safetensors")]) == 0
    back = ru.ControlVector.load(tmp_path / "back.safetensors")
    assert back.layers == [2, 4] and all(torch.equal(back[k], vector[k]) for k in (2, 4))
    capsys.readouterr()
    assert main(["vector", "inspect", str(tmp_path / "v.gguf")]) == 0 and "layer    4" in capsys.readouterr().out
    (tmp_path / "keep.gguf").write_text("mine")
    argv = ["vector", "export", str(tmp_path / "v.safetensors"), "--to", "gguf", "--out", str(tmp_path / "keep.gguf")]
    assert main(argv) == 2 and (tmp_path / "keep.gguf").read_text() == "mine"  # nothing overwritten unasked
    assert main(["vector", "import", str(tmp_path / "keep.gguf"), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "not a GGUF file" in capsys.readouterr().err
    pre = ru.ControlVector({1: torch.ones(64)}, point="resid_pre")
    with pytest.raises(ru.ConfigError, match="resid_post"):
        interop.to_gguf(pre, tmp_path / "pre.gguf")


def test_repeng_reads_the_gguf_and_steers_as_this_package_does(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    import numpy as np

    if not hasattr(np, "float_"):  # repeng 0.4.0 pins numpy<2; its one numpy-2 break is an annotation
        np.float_ = np.float64  # type: ignore[attr-defined]
    repeng = pytest.importorskip("repeng")
    model, tokenizer = load_shipped_model()
    vector = random_vector(2, 128) * 6.0 + random_vector(4, 128, seed=1) * 3.0
    interop.to_gguf(vector, tmp_path / "v.gguf")
    theirs = repeng.ControlVector.import_gguf(str(tmp_path / "v.gguf"))
    assert sorted(theirs.directions) == [2, 4]
    assert all(np.array_equal(theirs.directions[k], vector[k].numpy()) for k in (2, 4))
    ids = tokenizer(["Pralstoux spreads through"], return_tensors="pt")
    with torch.no_grad(), vector.apply(model, 1.5):
        ours = model(**ids).logits
        plain_check = None
    with torch.no_grad():
        plain_check = model(**ids).logits
    controlled = repeng.ControlModel(model, [2, 4])
    controlled.set_control(theirs, 1.5)
    with torch.no_grad():
        repeng_logits = controlled(**ids).logits
    controlled.unwrap()
    assert torch.allclose(ours, repeng_logits, atol=1e-5) and not torch.allclose(ours, plain_check, atol=1e-3)


def test_steering_vectors_round_trip_and_steer_alike() -> None:
    steering_vectors = pytest.importorskip("steering_vectors")
    model = make_model("llama")
    vector = random_vector(1, 32) * 4.0
    converted = interop.to_steering_vectors(vector)
    assert isinstance(converted, steering_vectors.SteeringVector) and torch.equal(
        converted.layer_activations[1], vector[1]
    )
    back = interop.from_steering_vectors(converted)
    assert back.layers == [1] and torch.equal(back[1], vector[1])
    ids = torch.tensor([[3, 7, 11, 5]])
    with torch.no_grad():
        plain = model(ids).logits
        with vector.apply(model, 2.0):
            ours = model(ids).logits
        with converted.apply(model, multiplier=2.0):
            theirs = model(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5) and not torch.allclose(ours, plain, atol=1e-3)


def test_missing_interop_packages_are_one_line_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(ru.ConfigError, match=r"pip install 'repe-unlearn\[interop\]'"):
        interop.to_gguf(random_vector(1, 8), tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_lm_eval_export_refuses_a_vector_of_another_width(tmp_path: Path) -> None:
    model, _ = load_shipped_model()
    with pytest.raises(ru.ShapeError, match="d_model 64"):
        interop.to_lm_eval_steered(random_vector(3, 64), model, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
