"""The CLI side of reference mode: raw-line corpora, per-topic lengths, the optimizer, and the tokenizer an
unlearned model ships with (byte for byte the base's, checked; eval/diagnose/attack warn on a mismatch)."""

import json
import shutil
from pathlib import Path

import pytest
from test_cli_unlearn import run, workdir  # noqa: F401  (the fixture)

from repe_unlearn.cli import main
from repe_unlearn.errors import FormatError
from repe_unlearn.toy import SHIPPED_MODEL, SHIPPED_WORLD

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def test_reference_mode_from_the_cli_records_what_ran(workdir: Path) -> None:  # noqa: F811
    out = workdir / "out"
    raw = str(workdir / "forget.jsonl")
    code = run(
        workdir,
        "--out",
        str(out),
        "--reference-mode",
        "--raw-lines",
        raw,
        "--forget-max-length",
        "12",
        "--min-len",
        "5",
    )
    assert code == 0
    summary = json.loads((out / "rmu_config.json").read_text())
    config = summary["config"]
    assert config["reference_mode"] and config["forget_max_length"] == [12] and config["min_len"] == 5
    assert summary["optimizer"] == "adamw-legacy"  # what ran, resolved from the mode
    for name in TOKENIZER_FILES:  # copied byte for byte from the base
        assert (out / name).read_bytes() == (workdir / "base" / name).read_bytes()


def test_raw_lines_must_name_a_given_corpus(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    assert run(workdir, "--out", str(workdir / "out"), "--raw-lines", str(workdir / "other.jsonl")) == 2
    assert "names no --forget or --retain corpus" in capsys.readouterr().err
    assert not (workdir / "out").exists()


def test_reference_mode_refuses_torch_adamw(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    assert run(workdir, "--out", str(workdir / "out"), "--reference-mode", "--optimizer", "adamw") == 2
    assert "adamw-legacy" in capsys.readouterr().err


def test_apply_delta_ships_the_bases_tokenizer_files(workdir: Path) -> None:  # noqa: F811
    assert run(workdir, "--out", str(workdir / "out")) == 0
    rebuilt = workdir / "rebuilt"
    delta = str(workdir / "out" / "rmu_delta.safetensors")
    assert main(["apply-delta", "--base", str(workdir / "base"), "--delta", delta, "--out", str(rebuilt)]) == 0
    for name in TOKENIZER_FILES:
        assert (rebuilt / name).read_bytes() == (workdir / "base" / name).read_bytes()


def test_a_tokenizer_that_would_tokenize_differently_is_never_written(tmp_path: Path, tokenizer: object) -> None:
    from repe_unlearn.rmu.artifacts import save_tokenizer

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FormatError, match=r"tokenizes .* differently"):
        save_tokenizer(out, tokenizer, SHIPPED_MODEL)  # the toy model's files, checked against another tokenizer


def with_lowercasing_tokenizer(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    spec = json.loads((target / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "Lowercase"}
    (target / "tokenizer.json").write_text(json.dumps(spec))
    return target


def test_eval_warns_when_the_tokenizer_differs_from_the_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = with_lowercasing_tokenizer(SHIPPED_MODEL, tmp_path / "changed")
    mcq = str(SHIPPED_WORLD / "forget_cloze.jsonl")
    assert main(["eval", "--model", str(changed), "--base", str(SHIPPED_MODEL), "--mcq", mcq, "--format", "cloze"]) == 0
    assert "warning: the tokenizer of" in capsys.readouterr().err
    assert (
        main(["eval", "--model", str(SHIPPED_MODEL), "--base", str(SHIPPED_MODEL), "--mcq", mcq, "--format", "cloze"])
        == 0
    )
    assert "warning" not in capsys.readouterr().err
    # without --base, the base named in rmu_config.json is used
    (changed / "rmu_config.json").write_text(json.dumps({"base_model": str(SHIPPED_MODEL)}))
    assert main(["eval", "--model", str(changed), "--mcq", mcq, "--format", "cloze"]) == 0
    assert "warning: the tokenizer of" in capsys.readouterr().err
