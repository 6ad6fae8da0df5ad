"""The toy preset (40 epochs) with and without the epoch cache: seconds and identical results.

    python benchmarks/bench_epoch_cache.py [--repeats 2] [--before /tmp/before]

In one process, on the shipped toy model and world, runs ``rmu.unlearn`` with ``--preset toy`` twice per
repeat, alternating ``epoch_cache_gb=0`` (every step runs the model up to layer 4 and the frozen replay) and
the default (epochs 2..40 run layers 2..4 from the cache), and checks that the per-step losses and the final
weights are identical. Then times the whole command line (`repe-unlearn unlearn --preset toy`, interpreter
start and imports included) as it is now and, with ``--before DIR``, as the package checked out in DIR runs it.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def in_process(cache_gb: float | None) -> tuple[float, list[tuple[float, float]], dict]:
    import torch

    from repe_unlearn import rmu
    from repe_unlearn.toy import notebook_setup

    model, tokenizer, forget, retain = notebook_setup()
    config = rmu.preset("toy", epoch_cache_gb=cache_gb)
    start = time.perf_counter()
    result = rmu.unlearn(model, tokenizer, [forget], [retain], config, progress=False)
    seconds = time.perf_counter() - start
    params = dict(model.named_parameters())
    weights = {name: params[name].detach().clone() for name in result.parameter_names}
    assert all(isinstance(w, torch.Tensor) for w in weights.values())
    return seconds, [(h.forget_loss, h.retain_loss) for h in result.history], weights


def command_seconds(env: dict[str, str] | None) -> float:
    from repe_unlearn.toy import SHIPPED_MODEL, SHIPPED_WORLD

    out = Path(tempfile.mkdtemp()) / "out"
    argv = [sys.executable, "-m", "repe_unlearn", "unlearn", "--model", str(SHIPPED_MODEL), "--preset", "toy"]
    argv += ["--forget", str(SHIPPED_WORLD / "forget.jsonl"), "--retain", str(SHIPPED_WORLD / "retain.jsonl")]
    start = time.perf_counter()
    # cwd elsewhere: `python -m` puts the working directory first on sys.path, before PYTHONPATH
    subprocess.run([*argv, "--out", str(out)], env=env, check=True, capture_output=True, cwd=out.parent)
    return time.perf_counter() - start


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--before", help="a checkout of the package before the epoch cache, run with PYTHONPATH")
    args = parser.parse_args()
    plain_s, cached_s = [], []
    for _ in range(args.repeats):
        a = in_process(0.0)
        b = in_process(None)
        plain_s.append(a[0])
        cached_s.append(b[0])
        same_losses = a[1] == b[1]
        same_weights = all(torch.equal(a[2][k], b[2][k]) for k in a[2])
    plain, cached = statistics.median(plain_s), statistics.median(cached_s)
    print("toy preset, 200 steps (5 batches x 40 epochs), in process (rmu.unlearn):")
    print(f"  without the epoch cache {plain:6.2f} s")
    print(f"  with the epoch cache    {cached:6.2f} s   {plain / cached:.2f}x faster")
    print(f"  per-step losses identical: {same_losses}; final weights identical: {same_weights}")
    now = statistics.median(command_seconds(None) for _ in range(args.repeats))
    print(f"whole command line now: {now:6.2f} s")
    if args.before:
        env = {**os.environ, "PYTHONPATH": str(Path(args.before).resolve())}
        before = statistics.median(command_seconds(env) for _ in range(args.repeats))
        print(f"whole command line before: {before:6.2f} s   {before / now:.2f}x faster now")


if __name__ == "__main__":
    main()
