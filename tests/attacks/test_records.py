"""What an attack's --json records: the settings that produced its numbers."""

import json
from pathlib import Path

from repe_unlearn.cli import main
from repe_unlearn.toy import SHIPPED_MODEL, SHIPPED_WORLD


def test_the_suffix_record_holds_its_search_settings(tmp_path: Path) -> None:
    rows = (SHIPPED_WORLD / "forget_cloze.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "train.jsonl").write_text("".join(rows[:4]))
    (tmp_path / "held.jsonl").write_text("".join(rows[100:104]))
    out = tmp_path / "suffix.json"
    argv = ["attack", "suffix", "--model", str(SHIPPED_MODEL), "--train-mcq", str(tmp_path / "train.jsonl")]
    argv += ["--eval-mcq", str(tmp_path / "held.jsonl"), "--format", "cloze", "--json", str(out)]
    argv += ["--length", "2", "--steps", "1", "--top-k", "4", "--candidates", "3", "--seed", "5"]
    assert main(argv) == 0
    record = json.loads(out.read_text())
    assert {k: record[k] for k in ("length", "steps", "top_k", "candidates", "seed")} == {
        "length": 2, "steps": 1, "top_k": 4, "candidates": 3, "seed": 5,
    }  # fmt: skip
    assert len(record["suffix_ids"]) == 2
    assert [point["step"] for point in record["curve"]] == [0, 1]  # without the suffix, then with it
    assert record["curve"][0]["accuracy"] == record["before"] and record["curve"][1]["accuracy"] == record["after"]
