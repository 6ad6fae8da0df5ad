import json
from pathlib import Path

import pytest

from repe_unlearn.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end_and_unlearns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "forget (pathogens)" in printed and "retain (towns)" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["before"]["forget (pathogens)"] >= 0.9 and results["before"]["retain (towns)"] >= 0.9
    assert results["after"]["forget (pathogens)"] <= 0.32
    assert results["before"]["retain (towns)"] - results["after"]["retain (towns)"] <= 0.02
    # lm-eval's letter format, on the entities whose letter questions the shipped letter layers never trained on
    assert results["before"]["forget (pathogens), letter"] >= 0.9 and results["before"]["retain (towns), letter"] >= 0.9
    assert results["after"]["forget (pathogens), letter"] <= 0.35 and results["after"]["retain (towns), letter"] >= 0.85
    assert "forget (pathogens), letter" in printed and "letter (lm-eval)" in (out / "report.md").read_text()
    assert set(results["attacks"]) == {"relearn", "ablate", "suffix"}
    for attack in results["attacks"].values():
        assert set(attack["before"]) == {"forget (held-out)", "retain"}
    assert results["diagnostics"]["max_abs_difference_from_base"]["forget"][:2] == [0.0, 0.0]
    for name in (
        "report.md",
        "accuracy.png",
        "losses.png",
        "norms.png",
        "relearning.png",
        "diagnostics/probes.png",
        "model/rmu_delta.safetensors",
        "robustness.json",
        "robustness.png",
    ):
        assert (out / name).is_file(), name
    assert "![accuracy](accuracy.png)" in (out / "report.md").read_text()
    battery = json.loads((out / "robustness.json").read_text())
    assert {"relearn", "unrelated", "lora", "ablate", "few-shot-1", "quantize-int4-group", "suffix"} <= set(
        battery["attacks"]
    )
    assert battery["verdict"] in (out / "report.md").read_text() and battery["verdict"] in printed
    assert len(battery["held_out_entities"]) == 25
    assert main(["demo", "--out", str(out)]) == 2  # an existing demo directory is not overwritten
