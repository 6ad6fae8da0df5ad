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
