"""`toy pretrain`'s schedule against the cosine cycles it replaced, side by side on the same worlds and seeds.

For each world (as in bench_toy_worlds.py) and each ``--seeds`` seed: pretraining until both cloze sets reach
the target, once with today's schedule (warm-up, the peak held until the facts are nearly known, one decay;
`repe_unlearn/toy/schedule.py`) and once with the cosine cycles of 400, 800, 1600, ... steps it replaced
(re-created below as the baseline). Everything else is the same, so the steps differ by the schedule alone;
seconds are measured in the same run, one after the other.

    python benchmarks/bench_pretrain_schedule.py [--worlds A C D] [--seeds 0 1] [--threads 2]
"""

import argparse
import importlib
import math
import tempfile

import torch
from bench_toy_worlds import WORLDS

from repe_unlearn.data import read_texts
from repe_unlearn.evaluation import read_mcq
from repe_unlearn.toy import PretrainConfig, World, write_world
from repe_unlearn.toy.schedule import FLOOR, Schedule

pretraining = importlib.import_module("repe_unlearn.toy.pretrain")  # the module, not the function


class Cycles(Schedule):
    """The schedule before: cosine cycles of 400, 800, 1600, ... steps, each warming up for 30 steps and ending
    at a tenth of the peak; a cycle's end is where `pretrain` compares accuracy with the cycle before."""

    def _cycle(self, step: int) -> tuple[int, int]:
        start, length = 0, 400
        while step >= start + length:
            start, length = start + length, 2 * length
        return start, length

    def factor(self, step: int) -> float:
        start, length = self._cycle(step)
        warmup = min(self.config.warmup, length // 10)
        warm = min(1.0, (step - start + 1) / warmup) if warmup else 1.0
        return warm * (FLOOR + (1 - FLOOR) / 2 * (1 + math.cos(math.pi * (step - start) / length)))

    def phase_ends(self, step: int) -> bool:
        return self._cycle(step + 1)[0] == step + 1

    def observe(self, step: int, gained: bool, near: bool) -> None:
        pass

    def phase_ended(self, step: int, near: bool) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", default=["A", "C", "D"], choices=list(WORLDS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=6, help="decoder layers (6, as measured; toy pretrain makes 4)")
    parser.add_argument(
        "--init-std", type=float, default=0.02, help="initial weights' std (0.02, as measured; toy pretrain uses 0.05)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.worlds:
        spec = dict(WORLDS[name])
        files = write_world(World.generate(spec.pop("seed"), spec.pop("entities"), **spec), tempfile.mkdtemp() + "/w")
        texts = read_texts(files["forget"]) + read_texts(files["retain"])
        cloze = {k: read_mcq(files[f"{k}_cloze"]) for k in ("forget", "retain")}
        for seed in args.seeds:
            runs = {}
            for label, schedule in (("now", Schedule), ("cycles", Cycles)):
                pretraining.Schedule = schedule  # type: ignore[attr-defined]
                config = PretrainConfig(seed=seed, max_seconds=1e6, n_layers=args.layers, init_std=args.init_std)
                model, _, _ = pretraining.pretrain(texts, config, eval_items=cloze, progress=False)  # type: ignore[attr-defined]
                runs[label] = model.config.repe_unlearn_pretrain
                run = runs[label]
                print(f"{name} seed {seed} {label}: {run['steps_run']} steps, {run['seconds']} s, {run['stopped']}")
            rows.append((name, seed, runs["now"], runs["cycles"]))
    print()
    print("| world | seed | steps now / before | seconds now / before | stopped now / before |")
    print("|---|---:|---:|---:|---|")
    for name, seed, now, before in rows:
        print(
            f"| {name} | {seed} | {now['steps_run']} / {before['steps_run']} | {now['seconds']:.0f} / "
            f"{before['seconds']:.0f} | {now['stopped']} / {before['stopped']} |"
        )
    ratio = sum(r[3]["steps_run"] for r in rows) / sum(r[2]["steps_run"] for r in rows)
    print(f"\nsteps before / now, over every run: {ratio:.2f}x")


if __name__ == "__main__":
    main()
