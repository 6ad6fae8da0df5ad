"""Peak memory of `repe-unlearn unlearn` on a 32-layer Llama: layers 0..ℓ only vs the whole model.

Builds a randomly initialised 32-layer Llama (d_model 1024, d_mlp 2816, vocab 32000: 1.9 GB of fp32 weights),
saved as safetensors shards with a word-level tokenizer, and runs the same command line with l=7, layers 5-7,
batch 4 x 128 tokens, 4 steps, each in its own process:

- ``layers 0..l`` (the default): layers 0..7 and the embeddings read tensor by tensor, the output streamed;
- ``--full-model``: every layer and the LM head loaded;
- with ``--before DIR``, also the package checked out in DIR (e.g. ``git worktree add /tmp/before <commit>``),
  run with ``PYTHONPATH=DIR``: the path before this change.

    python benchmarks/bench_rmu_memory.py [--before /tmp/before] [--keep /tmp/bench-llama32]

Prints each run's peak resident memory above a bare ``python -c "import torch, transformers"``, as MB and as a
fraction of the weights' bytes, the median seconds per step, whether the per-step losses are identical to the
first run's, and whether the written model directories hold identical tensors.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

VOCAB = 32000


def build(directory: Path) -> None:
    import random

    import torch
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    if (directory / "config.json").is_file():
        return
    words = [f"w{i}" for i in range(VOCAB - 1)]
    spec = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["</s>", *words])}, unk_token="</s>"))
    spec.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=spec, eos_token="</s>", pad_token="</s>")
    torch.manual_seed(0)
    config = tf.LlamaConfig(
        hidden_size=1024,
        num_hidden_layers=32,
        num_attention_heads=16,
        num_key_value_heads=16,
        intermediate_size=2816,
        vocab_size=VOCAB,
        max_position_embeddings=256,
    )
    tf.LlamaForCausalLM(config).save_pretrained(directory / "model", max_shard_size="500MB")
    tokenizer.save_pretrained(directory / "model")
    rng = random.Random(1)
    for name in ("forget", "retain"):
        lines = [json.dumps({"text": " ".join(rng.choices(words, k=200))}) for _ in range(16)]
        (directory / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    (directory / "config.json").write_text("{}\n")  # marks the directory complete


def peak_kb(argv: list[str], env: dict[str, str] | None = None) -> int:
    """Run ``argv`` to completion and return its peak resident set size (KB), from wait4."""
    # cwd elsewhere: `python -m` puts the working directory first on sys.path, before PYTHONPATH
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tempfile.gettempdir())
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out}\n{err[-2000:]}")
    return int(usage.ru_maxrss)


def tensors_equal(a: Path, b: Path) -> bool:
    """Whether two model directories hold the same tensors (read one at a time)."""
    import torch
    from safetensors import safe_open

    def index(directory: Path) -> dict[str, Path]:
        found = {}
        for path in directory.glob("*.safetensors"):
            if path.name.startswith(("rmu_", "control_")):
                continue
            with safe_open(str(path), framework="pt") as f:
                found.update({key: path for key in f.keys()})  # noqa: SIM118
        return found

    left, right = index(a), index(b)
    if set(left) != set(right):
        return False
    for key, path in left.items():
        with safe_open(str(path), framework="pt") as f, safe_open(str(right[key]), framework="pt") as g:
            if not torch.equal(f.get_tensor(key), g.get_tensor(key)):
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a checkout of the package before this change, run with PYTHONPATH")
    parser.add_argument("--keep", help="build the model here (reused when present) instead of a temporary dir")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--build", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        build(Path(args.build))
        return
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp())
    # built in a child process: a child's peak RSS counts what its parent held when it forked (Linux keeps the
    # high-water mark across exec), so this process stays small until every measurement is taken
    subprocess.run([sys.executable, __file__, "--build", str(work)], check=True, capture_output=True)
    model = work / "model"
    weights = sum(p.stat().st_size for p in model.glob("*.safetensors"))
    base_kb = peak_kb([sys.executable, "-c", "import torch, transformers"])
    common = ["--forget", str(work / "forget.jsonl"), "--retain", str(work / "retain.jsonl"), "--layer", "7"]
    common += ["--update-layers", "5,6,7", "--batch-size", "4", "--max-length", "128"]
    common += ["--max-batches", str(args.steps), "--model", str(model)]
    runs = [("layers 0..l", [], None), ("--full-model", ["--full-model"], None)]
    if args.before:
        env = {**os.environ, "PYTHONPATH": str(Path(args.before).resolve())}
        runs.append(("before this change", [], env))
    out_root = Path(tempfile.mkdtemp())
    rows = []
    for name, extra, env in runs:
        out, log = out_root / f"out{len(rows)}", out_root / f"log{len(rows)}.jsonl"
        argv = [sys.executable, "-m", "repe_unlearn", "unlearn", *common, *extra, "--out", str(out)]
        kb = peak_kb([*argv, "--log-jsonl", str(log)], env)
        steps = [json.loads(line) for line in log.read_text().splitlines()]
        rows.append((name, kb, steps, out))
    print(f"32-layer Llama, d_model 1024, fp32 weights {weights / 2**20:.0f} MB; l=7, layers 5-7, batch 4 x 128")
    print(f"bare interpreter (torch, transformers imported): {base_kb / 1024:.0f} MB")
    print(f"{'':<22}{'peak MB above':>14}{'x weights':>11}{'s/step':>9}  same losses  same model")
    first_losses = [(s["forget_loss"], s["retain_loss"]) for s in rows[0][2]]
    for name, kb, steps, out in rows:
        above = (kb - base_kb) * 1024
        seconds = statistics.median(s["step_seconds"] for s in steps[1:] or steps)
        same = [(s["forget_loss"], s["retain_loss"]) for s in steps] == first_losses
        print(
            f"{name:<22}{above / 2**20:14.0f}{above / weights:11.2f}{seconds:9.2f}  {same!s:<11}  "
            f"{tensors_equal(rows[0][3], out)}"
        )


if __name__ == "__main__":
    main()
