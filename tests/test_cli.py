import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_model

import repe_unlearn as ru
from repe_unlearn.cli import main


def test_console_script_help() -> None:
    out = subprocess.run([sys.executable, "-m", "repe_unlearn", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "inspect" in out.stdout and "usage: repe-unlearn" in out.stdout


def test_inspect_a_model_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_model("gpt_neox").save_pretrained(tmp_path / "neox")
    assert main(["inspect", str(tmp_path / "neox")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_layers"] == 4 and info["d_model"] == 32 and info["layers_path"] == "gpt_neox.layers"
    assert info["mlp_down_proj_layer_0"] == "gpt_neox.layers.0.mlp.dense_4h_to_h.weight"
    assert info["hook_points_layer_0"]["mlp_out"] == "post-hook on gpt_neox.layers.0.post_mlp_dropout"


def test_inspect_saved_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ru.ControlVector({2: torch.ones(32)}, metadata={"note": "x"}).save(tmp_path / "v.safetensors")
    assert main(["inspect", str(tmp_path / "v.safetensors")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "control_vector" and info["tensors"] == {"layers.2": "float32[32]"}
    assert info["metadata"] == {"note": "x", "point": "resid_post"}
    model = make_model("llama")
    ru.collect(model, {"input_ids": torch.tensor([[3, 4, 5]])}, layers=[1]).save(tmp_path / "c.safetensors")
    assert main(["inspect", str(tmp_path / "c.safetensors")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "activation_cache" and info["metadata"]["layers"] == [1]
    assert info["summary"].startswith("ActivationCache(model='LlamaForCausalLM'")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p, "not a HuggingFace model directory"),
        (lambda p: (p / "junk.safetensors").write_bytes(b"junk") and p / "junk.safetensors", "not a valid safetensors"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], make, message: str) -> None:
    assert main(["inspect", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("repe-unlearn: error: ") and message in err and err.count("\n") == 1


def test_help_imports_neither_torch_nor_transformers() -> None:
    """``--help`` answers in a fraction of a second because the parser never needs the heavy libraries
    (benchmarks/bench_cli_help.py measures the time; this checks the cause)."""
    import subprocess
    import sys

    code = (
        "import sys, contextlib, io\n"
        "from repe_unlearn.cli import build_parser, main\n"
        "build_parser()\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['unlearn', '--help'])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'nnsight') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bad_input_is_refused_before_torch_loads(tmp_path: Path) -> None:
    """A command checks its flags, outputs and input files before it imports torch or transformers, so that a
    typo is answered at once (and the hostile-user tests, one process per refusal, stay fast). Each refusal
    runs in one fresh interpreter, which must end without either library loaded."""
    corpus, questions, model = tmp_path / "corpus.txt", tmp_path / "q.jsonl", tmp_path / "model"
    corpus.write_text("Pralstoux spreads through silt dust.\n")
    questions.write_text(json.dumps({"question": "Q", "choices": ["a", "b"], "answer": 0}) + "\n")
    model.mkdir()
    missing = str(tmp_path / "missing.jsonl")
    cases = [
        ["eval", "--model", str(model), "--mcq", missing],
        ["eval", "--model", str(model), "--mcq", str(questions), "--format", "cloze", "--subject", "biology"],
        ["unlearn", "--model", str(model), "--forget", str(corpus), "--retain", str(corpus), "--out", "o"],
        ["unlearn", "--model", str(model), "--forget", missing, "--retain", str(corpus), "--out", str(tmp_path / "o")],
        ["toy", "pretrain", "--corpus", missing, "--out", str(tmp_path / "o")],
        ["attack", "quantize", "--model", str(model), "--eval-mcq", str(questions), "--setting", "4:x"],
        ["attack", "relearn", "--model", str(model), "--train", missing, "--eval-mcq", str(questions)],
        ["attack", "few-shot", "--model", str(model), "--shots-mcq", missing, "--eval-mcq", str(questions)],
        ["attack", "ablate", "--model", str(model), "--eval-mcq", str(questions)],
        ["diagnose", "--model", str(model), "--forget", str(corpus), "--retain", str(corpus), "--mcq", str(questions),
         "--out", str(tmp_path / "o")],
        ["apply-delta", "--base", str(model), "--delta", str(corpus), "--out", str(model)],
        ["eval", "--model", str(model), "--mcq", str(questions), "--base", missing],
        ["eval", "--model", str(model), "--mcq", str(tmp_path)],
        ["attack", "ablate", "--model", str(model), "--eval-mcq", str(questions), "--control-vectors", missing],
    ]  # fmt: skip
    code = (
        "import contextlib, io, json, sys\n"
        "from repe_unlearn.cli import main\n"
        "err = io.StringIO()\n"
        "with contextlib.redirect_stderr(err):\n"
        "    code = main(json.loads(sys.argv[1]))\n"
        "print(json.dumps([code, err.getvalue(), [m for m in ('torch', 'transformers') if m in sys.modules]]))\n"
    )
    for argv in cases:
        out = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True, check=True)
        exit_code, err, loaded = json.loads(out.stdout)
        assert exit_code == 2 and err.startswith("repe-unlearn: error: ") and err.count("\n") == 1, (argv, err)
        assert loaded == [], (argv, err, loaded)


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"WORLD_SIZE": "abc"}, "WORLD_SIZE must be a positive integer (torchrun sets it), got 'abc'"),
        ({"WORLD_SIZE": "-1"}, "WORLD_SIZE must be a positive integer"),
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE is 2 but RANK, MASTER_ADDR, MASTER_PORT are not set: launch several"),
    ],
)
def test_a_broken_launcher_environment_is_one_line(
    environment: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(["eval", "--model", "m", "--mcq", "q.jsonl"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"repe-unlearn: error: {message}") and err.count("\n") == 1, err


def test_eval_names_the_culprit_of_a_wrong_base_or_a_directory_of_questions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "Q", "choices": ["a", "b"], "answer": 0}) + "\n")
    assert main(["eval", "--model", str(tmp_path), "--mcq", str(questions), "--base", str(tmp_path / "nope")]) == 2
    assert f"--base {tmp_path / 'nope'} is not a model directory" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path), "--mcq", str(tmp_path)]) == 2
    assert f"MCQ file {tmp_path} is a directory" in capsys.readouterr().err


def test_eval_notes_a_file_named_for_the_other_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from repe_unlearn.toy import SHIPPED_MODEL, SHIPPED_WORLD

    rows = (SHIPPED_WORLD / "forget_cloze.jsonl").read_text().splitlines()[:3]
    for name in ("forget_cloze.jsonl", "forget-letter.jsonl", "cloze_and_letter.jsonl", "forget.jsonl"):
        (tmp_path / name).write_text("\n".join(rows) + "\n")

    def notes(name: str, *flags: str) -> list[str]:
        assert main(["eval", "--model", str(SHIPPED_MODEL), "--mcq", str(tmp_path / name), *flags]) == 0
        return [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]

    assert notes("forget_cloze.jsonl") == [
        f"note: {tmp_path / 'forget_cloze.jsonl'} is named as cloze questions but is scored in letter format; "
        "--format cloze scores it as cloze questions"
    ]
    assert notes("forget_cloze.jsonl", "--format", "cloze") == []
    assert notes("forget-letter.jsonl", "--format", "cloze")[0].endswith(
        "--format letter scores it as letter questions"
    )
    assert notes("forget-letter.jsonl") == notes("cloze_and_letter.jsonl") == notes("forget.jsonl") == []
