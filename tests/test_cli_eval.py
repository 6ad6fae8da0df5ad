import json
from pathlib import Path

import pytest

from repe_unlearn.cli import main
from repe_unlearn.toy import SHIPPED_MODEL, SHIPPED_WORLD


def test_eval_cloze_writes_json_and_predictions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "eval",
        "--model",
        str(SHIPPED_MODEL),
        "--mcq",
        str(SHIPPED_WORLD / "forget_cloze.jsonl"),
        "--mcq",
        str(SHIPPED_WORLD / "retain_letter.jsonl"),
        "--format",
        "cloze",
        "--perplexity",
        str(SHIPPED_WORLD / "retain.jsonl"),
        "--json",
        str(tmp_path / "r.json"),
        "--predictions",
        str(tmp_path / "p.jsonl"),
    ]
    assert main(argv) == 0
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert results["forget_cloze"]["accuracy"] >= 0.9 and results["forget_cloze"]["n"] == 200
    assert "acc_norm" in results["forget_cloze"] and results["perplexity:retain"]["perplexity"] < 2
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 400 and {"index", "pred", "answer", "scores", "file"} <= set(lines[0])
    assert "forget_cloze" in capsys.readouterr().out
    assert main(argv) == 2  # outputs exist: refused without --overwrite
    assert main([*argv, "--overwrite"]) == 0


def bad(tmp_path: Path, content: str) -> str:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    return str(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: ["--mcq", bad(p, '{"question": "q", "choices": ["a"]}\n')], "bad.jsonl:1: missing field(s) answer"),
        (
            lambda p: ["--mcq", bad(p, '{"question": "q", "choices": ["a", "b"], "answer": 5}\n')],
            "bad.jsonl:1: 'answer' must be an index 0..1",
        ),
        (
            lambda p: ["--mcq", bad(p, '{"question": "q", "choices": "ab", "answer": 0}\n')],
            "bad.jsonl:1: 'choices' must be a list",
        ),
        (lambda p: ["--mcq", bad(p, "")], "bad.jsonl holds no items"),
        (lambda p: ["--mcq", str(p / "missing.jsonl")], "missing.jsonl does not exist"),
        (
            lambda p: ["--mcq", str(SHIPPED_WORLD / "forget_cloze.jsonl"), "--model", str(p / "nomodel")],
            "not a HuggingFace model directory",
        ),
        (lambda p: [], "nothing to evaluate"),
    ],
)
def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], make, message: str) -> None:
    assert main(["eval", "--model", str(SHIPPED_MODEL), *make(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("repe-unlearn: error: ") and message in err and err.count("\n") == 1, err
