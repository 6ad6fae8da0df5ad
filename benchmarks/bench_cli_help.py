"""How fast ``repe-unlearn --help`` answers, for the top level and every subcommand, beside ``import torch``;
and how fast a command refuses bad input (a missing file, a flag that cannot apply).

Run: python benchmarks/bench_cli_help.py [--repeats 5]
Each command runs in a fresh interpreter (as a user's shell would start it); the table shows the median
wall time. ``python -c pass`` and ``python -c "import torch"`` are measured in the same run as baselines.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = [
    [],
    ["inspect"],
    ["unlearn"],
    ["apply-delta"],
    ["eval"],
    ["toy"],
    ["toy", "world"],
    ["toy", "pretrain"],
    ["diagnose"],
    ["attack"],
    ["attack", "relearn"],
    ["attack", "ablate"],
    ["attack", "suffix"],
    ["attack", "quantize"],
    ["attack", "few-shot"],
    ["attack", "unrelated"],
    ["robustness"],
    ["vector"],
    ["vector", "inspect"],
    ["vector", "export"],
    ["vector", "import"],
    ["vector", "combine"],
    ["demo"],
]


def refusals(root: Path) -> list[list[str]]:
    """Commands that must refuse (exit 2) before loading anything: files under ``root``."""
    questions, corpus, missing = root / "q.jsonl", root / "corpus.txt", str(root / "missing.jsonl")
    questions.write_text(json.dumps({"question": "Q", "choices": ["a", "b"], "answer": 0}) + "\n")
    corpus.write_text("Pralstoux spreads through silt dust.\n")
    model = str(root)
    return [
        ["eval", "--model", model, "--mcq", missing],
        ["unlearn", "--model", model, "--forget", str(corpus), "--retain", str(corpus), "--out", str(root / "o")],
        ["toy", "pretrain", "--corpus", missing, "--out", str(root / "o")],
        ["attack", "quantize", "--model", model, "--eval-mcq", str(questions), "--setting", "4:x"],
    ]


def median_seconds(argv: list[str], repeats: int, code: int = 0) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        assert done.returncode == code, (argv, done.returncode)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "repe_unlearn.cli"]
    rows = [("python -c pass", median_seconds([sys.executable, "-c", "pass"], args.repeats))]
    rows.append(("python -c 'import torch'", median_seconds([sys.executable, "-c", "import torch"], args.repeats)))
    for command in COMMANDS:
        rows.append((" ".join(["repe-unlearn", *command, "--help"]), median_seconds([*cli, *command, "--help"], 3)))
    helps = len(rows)
    with tempfile.TemporaryDirectory() as root:
        for command in refusals(Path(root)):
            name = " ".join(["repe-unlearn", *command[:2], "... (refused)"])
            rows.append((name, median_seconds([*cli, *command], 3, code=2)))
    width = max(len(name) for name, _ in rows)
    print(f"{'command':<{width}}  median s")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:8.3f}")
    slowest = max(seconds for name, seconds in rows[2:helps])
    print(f"\nslowest --help: {slowest:.3f} s (target: under 0.5 s)")
    print(f"slowest refusal: {max(seconds for _, seconds in rows[helps:]):.3f} s")


if __name__ == "__main__":
    main()
