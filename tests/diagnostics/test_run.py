import json
from pathlib import Path

import pytest
import torch
from conftest import FORGET, RETAIN, make_model

import repe_unlearn as ru
from repe_unlearn import rmu
from repe_unlearn.cli import main
from repe_unlearn.data import MCQItem
from repe_unlearn.diagnostics import diagnose, write_report

ITEMS = [MCQItem(f"the virus {i} spreads through", ("water", "air", "soil", "dust"), i % 4) for i in range(20)]


@pytest.fixture(scope="module")
def unlearned(tokenizer: object) -> tuple[torch.nn.Module, torch.nn.Module, rmu.RMUResult]:
    base = make_model("llama")
    model = make_model("llama")
    config = rmu.RMUConfig(
        layer=2,
        update_layers=(1, 2),
        steering_coeff=(20.0,),
        alpha=(10.0,),
        lr=0.05,
        batch_size=4,
        max_batches=6,
        epochs=3,
        max_length=32,
    )
    result = rmu.unlearn(model, tokenizer, [FORGET], [RETAIN], config, progress=False)
    return base, model, result


def test_one_pass_gives_norms_cosines_and_probes(unlearned: tuple, tokenizer: object) -> None:
    base, model, result = unlearned
    d = diagnose(
        model,
        tokenizer,
        FORGET,
        RETAIN,
        {"q": ITEMS},
        base=base,
        format="cloze",
        direction=result.directions[0],
        steered_layer=2,
        updated_layers=[1, 2],
    )
    out = d.to_dict()
    assert out["layers"] == [0, 1, 2, 3]
    assert set(out["norms"]) == {"base", "model"} and set(out["probe_accuracy"]["model"]) == {"domain", "q"}
    assert out["chance"]["q"] == 0.25 and out["chance"]["domain"] == 0.5
    # below the first updated layer the two models are the same model
    assert out["max_abs_difference_from_base"]["forget"][0] == 0.0
    assert out["cosine_to_base"]["forget"][0] == pytest.approx(1.0)
    assert out["max_abs_difference_from_base"]["forget"][2] > 0
    # RMU pushed forget activations at the steered layer towards u, and inflated them
    assert out["cosine_to_control_vector"]["model"]["forget"][2] > out["cosine_to_control_vector"]["base"]["forget"][2]
    assert out["norms"]["model"]["forget"][2] > 2 * out["norms"]["base"]["forget"][2]
    # the norms equal what record() gives for the same texts
    batch = next(ru.tokenize_batches(tokenizer, FORGET[:32], 32))
    cache = ru.collect(model, batch)
    from repe_unlearn.diagnostics import token_norms

    assert out["norms"]["model"]["forget"][1] == pytest.approx(
        float(token_norms(cache[1], cache.attention_mask).mean()), rel=1e-5
    )


def test_report_files(unlearned: tuple, tokenizer: object, tmp_path: Path) -> None:
    base, model, _ = unlearned
    d = diagnose(model, tokenizer, FORGET, RETAIN, {"q": ITEMS}, base=base, steered_layer=2, updated_layers=[1, 2])
    paths = write_report(d, tmp_path)
    assert json.loads(paths["json"].read_text())["steered_layer"] == 2
    assert paths["norms"].stat().st_size > 1000 and paths["probes"].stat().st_size > 1000
    assert "bit-identical" in paths["report"].read_text()


def test_cli_diagnose(unlearned: tuple, tokenizer: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, model, result = unlearned
    rmu.save_unlearned(tmp_path / "unlearned", model, tokenizer, result)
    base.save_pretrained(tmp_path / "base")
    (tmp_path / "f.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in FORGET))
    (tmp_path / "r.txt").write_text("\n".join(RETAIN))
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(vars(i) | {"choices": list(i.choices)}) + "\n" for i in ITEMS))
    argv = [
        "diagnose",
        "--model",
        str(tmp_path / "unlearned"),
        "--base",
        str(tmp_path / "base"),
        "--forget",
        str(tmp_path / "f.jsonl"),
        "--retain",
        str(tmp_path / "r.txt"),
        "--mcq",
        str(tmp_path / "q.jsonl"),
        "--out",
        str(tmp_path / "diag"),
        "--float16",
    ]
    assert main(argv) == 0
    out = json.loads((tmp_path / "diag" / "diagnostics.json").read_text())
    assert out["steered_layer"] == 2 and out["updated_layers"] == [1, 2] and "cosine_to_control_vector" in out
    assert "chance" in capsys.readouterr().out
    assert main([*argv[:-3], "--out", str(tmp_path / "diag2"), "--control-vectors", str(tmp_path / "nope")]) == 2
