"""How fast ``repe-unlearn --help`` answers, for the top level and every subcommand, beside ``import torch``.

Run: python benchmarks/bench_cli_help.py [--repeats 5]
Each command runs in a fresh interpreter (as a user's shell would start it); the table shows the median
wall time. ``python -c pass`` and ``python -c "import torch"`` are measured in the same run as baselines.
"""

import argparse
import statistics
import subprocess
import sys
import time

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


def median_seconds(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
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
    width = max(len(name) for name, _ in rows)
    print(f"{'command':<{width}}  median s")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:8.3f}")
    slowest = max(seconds for name, seconds in rows[2:])
    print(f"\nslowest --help: {slowest:.3f} s (target: under 0.5 s)")


if __name__ == "__main__":
    main()
