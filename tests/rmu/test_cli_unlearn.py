import json
from pathlib import Path

import pytest
import torch
from conftest import FORGET, RETAIN, make_model
from safetensors.torch import save_file

from repe_unlearn import rmu
from repe_unlearn.cli import main
from repe_unlearn.rmu import preset as ru_preset

FAST = ["--layer", "2", "--lr", "0.01", "--batch-size", "4", "--max-batches", "4", "--max-length", "16"]


@pytest.fixture
def workdir(tmp_path: Path, tokenizer: object) -> Path:
    model = make_model("llama")
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")  # type: ignore[attr-defined]
    (tmp_path / "forget.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in FORGET))
    (tmp_path / "retain.txt").write_text("\n".join(RETAIN) + "\n")
    return tmp_path


def run(workdir: Path, *extra: str) -> int:
    argv = [
        "unlearn",
        "--model",
        str(workdir / "base"),
        "--forget",
        str(workdir / "forget.jsonl"),
        "--retain",
        str(workdir / "retain.txt"),
        *FAST,
        *extra,
    ]
    return main(argv)


def test_an_explicit_steering_coeff_replaces_the_presets_adaptive_one(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--preset toy sets c = β x norm (β=8); an explicit --steering-coeff must win, as every explicit flag does,
    with a note; --steering-coeff and --adaptive-coeff together are refused."""
    argv = ["unlearn", "--model", str(workdir / "base"), "--forget", str(workdir / "forget.jsonl"), "--retain",
            str(workdir / "retain.txt"), "--preset", "toy", "--epochs", "1", "--max-batches", "1"]  # fmt: skip
    assert main([*argv, "--out", str(workdir / "out"), "--steering-coeff", "5"]) == 0
    captured = capsys.readouterr()
    assert "note: --steering-coeff replaces --preset toy's adaptive coefficient β=8" in captured.err, captured.err
    summary = json.loads((workdir / "out" / "rmu_config.json").read_text())
    assert summary["steering_coeff_used"] == [5.0] and summary["config"]["adaptive_coeff"] is None
    assert main([*argv, "--out", str(workdir / "out2")]) == 0  # the preset alone: c from β, not 5
    summary = json.loads((workdir / "out2" / "rmu_config.json").read_text())
    assert summary["steering_coeff_used"][0] == pytest.approx(8 * summary["frozen_norm_at_layer"][0])
    capsys.readouterr()
    both = [*argv, "--out", str(workdir / "out3"), "--steering-coeff", "5", "--adaptive-coeff", "2"]
    assert main(both) == 2
    assert "--steering-coeff and --adaptive-coeff are alternatives" in capsys.readouterr().err
    assert not (workdir / "out3").exists()
    assert rmu.preset("toy", steering_coeff=(5.0,)).adaptive_coeff is None
    assert rmu.preset("toy").adaptive_coeff == 8.0


def test_the_toy_preset_fits_a_model_of_any_depth(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The toy preset counts its layers from the last: on this 4-layer model it steers layer 2, and the run
    records the layers it used."""
    out = workdir / "out"
    argv = ["unlearn", "--model", str(workdir / "base"), "--forget", str(workdir / "forget.jsonl")]
    argv += ["--retain", str(workdir / "retain.txt"), "--preset", "toy", "--epochs", "1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "steered layer 2; updated model.layers.0.mlp.down_proj.weight" in printed, printed
    summary = json.loads((out / "rmu_config.json").read_text())
    assert summary["config"]["layer"] == 2 and summary["config"]["update_layers"] == [0, 1, 2]
    assert main([*argv[:-2], "--out", str(workdir / "out2"), "--layer", "-5"]) == 2
    assert "error: layer -5 is out of range: the model has 4 layers" in capsys.readouterr().err
    assert not (workdir / "out2").exists()
    for typo in ("0,,1", "1,2,"):  # a value left out is refused, not dropped
        assert main([*argv[:-2], "--out", str(workdir / "out2"), "--update-layers", typo]) == 2
        assert f"expected comma-separated ints, got an empty item in '{typo}'" in capsys.readouterr().err
    assert not (workdir / "out2").exists()
    # negative lists read as values, with a space as with "=": the same run as the preset's
    explicit = [*argv[:-2], "--out", str(workdir / "out3"), "--layer", "-2", "--update-layers", "-4,-3,-2"]
    assert main(explicit) == 0
    again = json.loads((workdir / "out3" / "rmu_config.json").read_text())["config"]
    assert (again["layer"], again["update_layers"]) == (2, [0, 1, 2])


def test_a_layer_given_with_a_preset_moves_its_update_layers(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--preset toy updates the three layers up to its ℓ; with --layer given, they follow the given ℓ (the
    default ℓ-2..ℓ), so the steered layer is updated; a note says so. A preset's layers that do not fit the model
    are named as the preset's."""
    argv = ["unlearn", "--model", str(workdir / "base"), "--forget", str(workdir / "forget.jsonl")]
    argv += ["--retain", str(workdir / "retain.txt"), "--preset", "toy", "--epochs", "1"]
    assert main([*argv, "--layer", "-1", "--out", str(workdir / "out")]) == 0
    captured = capsys.readouterr()
    assert "note: --layer -1 replaces --preset toy's layer -2, so its --update-layers move" in captured.err
    updated = ", ".join(f"model.layers.{i}.mlp.down_proj.weight" for i in (1, 2, 3))
    assert f"steered layer 3; updated {updated}" in captured.out, captured.out
    config = json.loads((workdir / "out" / "rmu_config.json").read_text())["config"]
    assert (config["layer"], config["update_layers"]) == (3, None)  # None: the default, ℓ-2..ℓ
    assert ru_preset("toy", layer=3).layers_to_update == (1, 2, 3)  # the Python API moves them alike
    shallow = make_model("llama")
    shallow.model.layers = shallow.model.layers[:2]
    shallow.config.num_hidden_layers = 2
    shallow.save_pretrained(workdir / "shallow")
    (workdir / "base" / "tokenizer.json").rename(workdir / "shallow" / "tokenizer.json")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (workdir / "base" / name).exists():
            (workdir / "base" / name).rename(workdir / "shallow" / name)
    argv[2] = str(workdir / "shallow")
    assert main([*argv, "--out", str(workdir / "out2")]) == 2
    err = capsys.readouterr().err
    assert "update layer -4 is out of range: the model has 2 layers" in err
    assert "--preset toy set layer -2, update layers -4,-3,-2: give --layer / --update-layers" in err
    assert not (workdir / "out2").exists()


def test_unlearn_writes_a_loadable_model_delta_and_log(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = workdir / "out"
    assert run(workdir, "--out", str(out), "--log-jsonl", str(workdir / "log.jsonl"), "--adaptive-coeff", "2") == 0
    printed = capsys.readouterr().out
    assert "RMU: 4 steps" in printed and "steering coefficient c:" in printed
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "rmu_delta.safetensors",
        "control_vectors.safetensors",
        "rmu_config.json",
        "tokenizer.json",
    } <= names
    summary = json.loads((out / "rmu_config.json").read_text())
    assert summary["config"]["adaptive_coeff"] == 2.0 and summary["steps"] == 4
    assert summary["steering_coeff_used"][0] == pytest.approx(2 * summary["frozen_norm_at_layer"][0])
    lines = [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 1, 2, 3]
    assert {"forget_loss", "retain_loss", "loss", "step_seconds", "forget_norm", "retain_norm", "topic"} <= set(
        lines[0]
    )
    assert not [p for p in workdir.iterdir() if p.name.startswith(".out")]  # no temporary leftovers

    # apply-delta on the base rebuilds the same weights
    assert (
        main(
            [
                "apply-delta",
                "--base",
                str(workdir / "base"),
                "--delta",
                str(out / "rmu_delta.safetensors"),
                "--out",
                str(workdir / "rebuilt"),
            ]
        )
        == 0
    )
    from transformers import AutoModelForCausalLM

    unlearned = AutoModelForCausalLM.from_pretrained(out)
    rebuilt = AutoModelForCausalLM.from_pretrained(workdir / "rebuilt")
    for (name, a), (_, b) in zip(unlearned.named_parameters(), rebuilt.named_parameters(), strict=True):
        assert torch.equal(a, b), name

    # ... and refuses a base it was not made from
    assert (
        main(
            [
                "apply-delta",
                "--base",
                str(out),
                "--delta",
                str(out / "rmu_delta.safetensors"),
                "--out",
                str(workdir / "wrong"),
            ]
        )
        == 2
    )
    assert "was made from another base model" in capsys.readouterr().err
    assert not (workdir / "wrong").exists()


def test_given_control_vectors_are_used(workdir: Path) -> None:
    vectors = workdir / "cv.safetensors"
    save_file({"0": torch.ones(32)}, str(vectors))
    assert run(workdir, "--out", str(workdir / "out"), "--control-vectors", str(vectors)) == 0
    from repe_unlearn.rmu import load_directions

    used = load_directions(workdir / "out" / "control_vectors.safetensors", 1, 32)
    assert torch.allclose(used[0], torch.ones(32) / 32**0.5)


def test_explicit_flags_override_the_preset(workdir: Path) -> None:
    assert (
        run(
            workdir,
            "--out",
            str(workdir / "out"),
            "--preset",
            "wmdp-zephyr",
            "--update-layers",
            "1,2",
            "--steering-coeff",
            "3",
        )
        == 0
    )
    config = json.loads((workdir / "out" / "rmu_config.json").read_text())["config"]
    assert config["layer"] == 2 and config["update_layers"] == [1, 2] and config["steering_coeff"] == [3.0]
    assert config["alpha"] == [1200.0] and config["reference_mode"] is True


def bad_jsonl(p: Path) -> list[str]:
    (p / "bad.jsonl").write_text('{"text": "fine text here"}\n{"text": 3}\n')
    return ["--forget", str(p / "bad.jsonl")]


def wrong_size_vectors(p: Path) -> list[str]:
    save_file({"0": torch.ones(8)}, str(p / "cv.safetensors"))
    return ["--control-vectors", str(p / "cv.safetensors")]


def junk_vectors(p: Path) -> list[str]:
    (p / "cv.safetensors").write_bytes(b"junk")
    return ["--control-vectors", str(p / "cv.safetensors")]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (lambda p: ["--model", str(p / "nowhere")], "not a HuggingFace model directory"),
        (lambda p: ["--forget", str(p / "missing.jsonl")], "missing.jsonl does not exist"),
        (bad_jsonl, "bad.jsonl:2: expected an object with a string field 'text'"),
        (lambda p: ["--layer", "9"], "layer 9 is out of range"),
        (lambda p: ["--update-layers", "1,3"], r"update layers [3] are invalid"),
        (lambda p: ["--steering-coeff", "1,2"], "2 values of steering_coeff for 1 forget corpora"),
        (wrong_size_vectors, "expected a vector of size d_model=32"),
        (junk_vectors, "not a valid safetensors file"),
        (lambda p: ["--min-len", "5000"], "has no text of at least 5000 characters"),
        (lambda p: ["--lr", "1e20"], "loss became"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str], extra, message: str
) -> None:
    out = workdir / "out"
    assert run(workdir, "--out", str(out), *extra(workdir)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("repe-unlearn: error: ") and message in errors[0], err
    assert err.endswith(errors[0] + "\n") and "Traceback" not in err
    assert not out.exists()


def test_existing_output_is_refused_unless_overwrite(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = workdir / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert run(workdir, "--out", str(out)) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep me"
    # --overwrite replaces only what this tool wrote: a directory holding anything else is refused
    assert run(workdir, "--out", str(out), "--overwrite") == 2
    assert "precious.txt" in capsys.readouterr().err and (out / "precious.txt").read_text() == "keep me"
    mine = workdir / "mine"
    assert run(workdir, "--out", str(mine)) == 0
    first = (mine / "rmu_delta.safetensors").read_bytes()
    assert run(workdir, "--out", str(mine), "--overwrite", "--seed", "7") == 0
    assert (mine / "rmu_delta.safetensors").read_bytes() != first
