"""--steer / --ablate on eval, diagnose and attack, and `repe-unlearn vector`: exactly the Python interventions."""

import json
from pathlib import Path

import pytest
import torch

import repe_unlearn as ru
from repe_unlearn.cli import main
from repe_unlearn.evaluation import evaluate_mcq, read_mcq
from repe_unlearn.toy import SHIPPED_MODEL, SHIPPED_WORLD, load_shipped_model


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("steer")
    items = root / "items.jsonl"
    items.write_text("".join((SHIPPED_WORLD / "forget_cloze.jsonl").read_text().splitlines(True)[:40]))
    d = torch.randn(128, generator=torch.Generator().manual_seed(3))
    ru.ControlVector({3: d / d.norm()}, metadata={"coefficient": 9.0}).save(root / "v.safetensors")
    e = torch.randn(128, generator=torch.Generator().manual_seed(4))
    ru.ControlVector({1: e / e.norm(), 4: e / e.norm()}).save(root / "w.safetensors")
    return {"root": root, "items": items, "v": root / "v.safetensors", "w": root / "w.safetensors"}


def predictions(path: Path) -> list[int]:
    return [json.loads(line)["pred"] for line in path.read_text().splitlines()]


def test_eval_steer_and_ablate_equal_the_python_interventions(files: dict[str, Path]) -> None:
    model, tokenizer = load_shipped_model()
    items = read_mcq(files["items"])
    v, w = ru.ControlVector.load(files["v"]), ru.ControlVector.load(files["w"])
    cases = {
        "steer": (["--steer", f"{files['v']}:20"], v.apply(model, 20.0)),
        "recorded": (["--steer", str(files["v"])], v.apply(model, 9.0)),  # the file's own coefficient
        "last": (["--steer", f"{files['v']}:20", "--steer-positions", "last"], v.apply(model, 20.0, positions="last")),
        "two": (
            ["--steer", f"{files['v']}:20", "--steer", f"{files['w']}:-15"],
            v.apply(model, 20.0) + w.apply(model, -15.0),
        ),
        "ablate": (["--ablate", str(files["w"])], w.ablate(model)),
    }  # fmt: skip
    plain = [p.pred for p in evaluate_mcq(model, tokenizer, items, format="cloze").predictions]
    changed = 0
    for name, (flags, intervention) in cases.items():
        out = files["root"] / f"{name}.jsonl"
        argv = ["eval", "--model", str(SHIPPED_MODEL), "--mcq", str(files["items"]), "--format", "cloze"]
        assert main([*argv, "--predictions", str(out), "--json", str(out.with_suffix(".json")), *flags]) == 0
        expected = evaluate_mcq(model, tokenizer, items, format="cloze", intervention=intervention)
        assert predictions(out) == [p.pred for p in expected.predictions], name
        changed += predictions(out) != plain
        record = json.loads(out.with_suffix(".json").read_text())
        assert record["interventions"] and record["interventions"][0].split()[0] in ("steer", "ablate")
    assert changed >= 3  # the interventions change answers: agreement is not the unsteered model twice


def test_attack_and_diagnose_run_under_steering(files: dict[str, Path], tmp_path: Path) -> None:
    argv = ["attack", "quantize", "--model", str(SHIPPED_MODEL), "--eval-mcq", str(files["items"]), "--format", "cloze"]
    argv += ["--setting", "8:per-channel"]
    assert main([*argv, "--json", str(tmp_path / "plain.json")]) == 0
    assert main([*argv, "--steer", f"{files['v']}:40", "--json", str(tmp_path / "steered.json")]) == 0
    plain, steered = (json.loads((tmp_path / f).read_text()) for f in ("plain.json", "steered.json"))
    assert steered["interventions"] == [f"steer {files['v']} layers 3 x 40 at resid_post, positions all"]
    assert plain["interventions"] == []
    assert steered["attacks"][0]["before"] != plain["attacks"][0]["before"]  # the evaluation was steered
    world = SHIPPED_WORLD
    common = ["diagnose", "--model", str(SHIPPED_MODEL), "--forget", str(world / "forget.jsonl")]
    common += ["--retain", str(world / "retain.jsonl"), "--mcq", str(world / "forget_cloze.jsonl"), "--format", "cloze"]
    assert main([*common, "--out", str(tmp_path / "d0")]) == 0
    assert main([*common, "--steer", f"{files['v']}:40", "--out", str(tmp_path / "d1")]) == 0
    norms = [json.loads((tmp_path / d / "diagnostics.json").read_text())["norms"]["model"] for d in ("d0", "d1")]
    assert norms[0]["forget"][:3] == norms[1]["forget"][:3] and norms[0]["forget"][3] != norms[1]["forget"][3]
    recorded = json.loads((tmp_path / "d1" / "diagnostics.json").read_text())["interventions"]
    assert recorded == [f"steer {files['v']} layers 3 x 40 at resid_post, positions all"]


def test_bad_interventions_are_one_line_errors(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    base = ["eval", "--model", str(SHIPPED_MODEL), "--mcq", str(files["items"]), "--format", "cloze"]
    small = files["root"] / "small.safetensors"
    ru.ControlVector({1: torch.ones(8)}).save(small)
    for flags, message in (
        (["--steer", "missing.safetensors:2"], "is not a file"),
        (["--steer", f"{files['v']}:nan"], "finite"),
        (["--steer", f"{files['v']}:abc"], "'abc' is not a number"),
        (["--steer", str(small)], "d_model 8"),
        (["--ablate", str(files["items"])], "not a valid safetensors file"),
    ):
        capsys.readouterr()
        assert main([*base, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (flags, err)


def test_vector_inspect_combine_and_rmu_files(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "sum.safetensors"
    assert (
        main(["vector", "combine", "--term", f"{files['v']}:2", "--term", f"{files['w']}:-0.5", "--out", str(out)]) == 0
    )
    combined = ru.ControlVector.load(out)
    expected = ru.ControlVector.load(files["v"]) * 2 + ru.ControlVector.load(files["w"]) * -0.5
    assert combined.layers == [1, 3, 4] and all(torch.allclose(combined[k], expected[k]) for k in (1, 3, 4))
    assert main(["vector", "combine", "--term", str(files["v"]), "--out", str(out)]) == 2  # exists: refused
    from repe_unlearn.rmu.targets import save_directions

    rmu_dir = tmp_path / "rmu"
    rmu_dir.mkdir()
    save_directions(rmu_dir / "control_vectors.safetensors", torch.eye(128)[:1], layer=4, coefficients=[112.5])
    capsys.readouterr()
    assert main(["vector", "inspect", str(rmu_dir / "control_vectors.safetensors"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["norms"] == {"4": 1.0} and record["metadata"]["coefficient"] == 112.5
