"""The quantization attack: round-to-nearest int8/int4 of every decoder linear weight, per channel or group-wise."""

import json
from pathlib import Path

import pytest
import torch
from conftest import ARCHS, make_model

import repe_unlearn as ru
from repe_unlearn.attacks import quantize, quantize_weight, quantized
from repe_unlearn.attacks.quantize import group_size
from repe_unlearn.cli import main


def test_round_to_nearest_by_hand() -> None:
    w = torch.tensor([[1.0, -0.55, 0.26, 0.0], [0.0, 0.0, 0.0, 0.0], [-2.0, 0.1, 0.3, 2.0]])
    q = quantize_weight(w, 4)  # 4 bits: integers -7..7, scale = row max / 7
    scale = torch.tensor([1.0, 1.0, 2.0]) / 7
    ints = torch.tensor([[7.0, -4.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0], [-7.0, 0.0, 1.0, 7.0]])  # -3.85 -> -4
    assert torch.equal(q, ints * scale[:, None])
    # group-wise: one scale per group of 2 columns
    g = quantize_weight(w, 8, "group", group=2)
    scales = w.reshape(3, 2, 2).abs().amax(-1, keepdim=True) / 127
    scales[scales == 0] = 1
    assert torch.equal(g, (torch.round(w.reshape(3, 2, 2) / scales) * scales).reshape(3, 4))


def test_grid_and_error_bounds() -> None:
    torch.manual_seed(0)
    w = torch.randn(16, 96)
    for bits, top in ((8, 127), (4, 7)):
        for scheme, size in (("per-channel", 96), ("group", 96)):  # 128 does not divide 96: the group is 96
            q = quantize_weight(w, bits, scheme)  # type: ignore[arg-type]
            scale = w.reshape(16, -1, size).abs().amax(-1, keepdim=True) / top
            steps = q.reshape(16, -1, size) / scale
            assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.abs().max() <= top + 1e-4
            assert ((q - w).reshape(16, -1, size).abs() <= scale / 2 + 1e-6).all()
    assert group_size(96) == 96 and group_size(200) == 100 and group_size(4096) == 128 and group_size(7, 4) == 1
    assert (quantize_weight(w, 8) - w).abs().max() < (quantize_weight(w, 4) - w).abs().max()


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_quantized_model_is_restored_bit_for_bit(arch: str, batch: dict) -> None:
    model = make_model(arch)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    plain = model(**batch).logits
    with quantized(model, 4, "group", group=16) as count:
        rough = model(**batch).logits
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert count == len(changed) > 0 and not torch.equal(rough, plain)
    assert all("layers" in n or ".h." in n for n in changed)  # decoder layers only: embeddings and head stay
    with quantized(model, 8):
        fine = model(**batch).logits
    assert (fine - plain).abs().max() < (rough - plain).abs().max()  # int8 is closer than int4
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_conv1d_weights_are_quantized_per_output_channel() -> None:
    model = make_model("gpt2")
    weight = model.transformer.h[0].mlp.c_fc.weight  # Conv1D: [in out]
    expected = quantize_weight(weight.detach().T, 4).T
    with quantized(model, 4):
        assert torch.equal(weight.detach(), expected)


def test_the_attack_evaluates_each_setting_and_leaves_the_model(batch: dict) -> None:
    model = make_model("llama")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def evaluate() -> dict[str, float]:
        with torch.no_grad():
            return {"logit": float(model(**batch).logits[0, -1, 5])}

    results = quantize(model, evaluate=evaluate)
    assert [r.attack for r in results] == [
        "quantize-int8-per-channel",
        "quantize-int4-per-channel",
        "quantize-int4-group",
    ]
    assert all(r.before == results[0].before for r in results)
    with quantized(model, 4, "per-channel"):
        assert results[1].after == evaluate()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(ru.ConfigError, match="bits"):
        quantize_weight(torch.ones(2, 2), 5)


def test_quantize_cli(tmp_path: Path, tokenizer: object, capsys: pytest.CaptureFixture[str]) -> None:
    make_model("qwen2").save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")  # type: ignore[attr-defined]
    items = [{"question": f"the town {i} has a", "choices": ["river", "bridge"], "answer": i % 2} for i in range(6)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    weights = (tmp_path / "m" / "model.safetensors").read_bytes()
    common = ["attack", "quantize", "--model", str(tmp_path / "m"), "--eval-mcq", str(tmp_path / "q.jsonl")]
    assert main([*common, "--format", "cloze", "--setting", "4:group", "--json", str(tmp_path / "q.json")]) == 0
    out = json.loads((tmp_path / "q.json").read_text())
    assert [a["attack"] for a in out["attacks"]] == ["quantize-int4-group"] and out["attacks"][0]["group"] == 128
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == weights  # the model on disk is untouched
    capsys.readouterr()
    assert main([*common, "--setting", "5:group"]) == 2
    assert "BITS:SCHEME" in capsys.readouterr().err


def test_the_groups_used_are_recorded_beside_the_one_asked_for() -> None:
    """A row splits into equal groups, so group 100 on the tiny model's narrower rows uses a divisor of their
    width: the record says which groups were used beside the one asked for."""
    model = make_model("llama")
    widths = {m.weight.shape[1] for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.lm_head}
    (result,) = quantize(model, evaluate=lambda: {"x": 0.0}, settings=((4, "group"),), group=100)
    assert result.details["group"] == 100
    assert result.details["groups_used"] == sorted({group_size(w, 100) for w in widths}) != [100]
