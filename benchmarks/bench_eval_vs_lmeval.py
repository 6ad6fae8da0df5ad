"""`repe-unlearn eval` vs lm-evaluation-harness on local WMDP-format tasks: same predictions, end-to-end time.

Needs lm-eval and accelerate (`pip install lm-eval accelerate`; not dependencies of the project).
Builds a randomly initialised Llama (8 layers, d_model 256) with a byte-level BPE tokenizer in which
" A".." D" are single tokens, as in real LLM vocabularies, saves it as a HuggingFace directory, writes the
toy world's letter-format question files as lm-eval tasks (the WMDP template), and runs both command lines
on them, each in its own process:

    python benchmarks/bench_eval_vs_lmeval.py [--batch-size 16]

Prints the wall time of each command, the speed-up, both accuracies and how many items' predictions agree.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# lm-eval's WMDP template (tasks/wmdp/_default_template_yaml), pointed at a local JSONL file
DOC_TO_TEXT = (
    "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
)


def task_yaml(name: str, path: Path) -> str:
    lines = [
        f"task: {name}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {path}",
        "test_split: test",
        "num_fewshot: 0",
        "output_type: multiple_choice",
        f"doc_to_text: {json.dumps(DOC_TO_TEXT)}",
        'doc_to_choice: ["A", "B", "C", "D"]',
        "doc_to_target: answer",
        "metric_list:",
        "  - metric: acc",
        "    aggregation: mean",
        "    higher_is_better: true",
        "metadata:",
        "  version: 1",
    ]
    return "\n".join(lines) + "\n"


def build_model(directory: Path, world: Path) -> None:
    import torch
    import transformers as tf

    from repe_unlearn.data import read_texts
    from repe_unlearn.evaluation import MCQItem, letter_prompt, read_mcq
    from repe_unlearn.toy import train_tokenizer

    items: list[MCQItem] = read_mcq(world / "forget_letter.jsonl") + read_mcq(world / "retain_letter.jsonl")
    texts = read_texts(world / "forget.jsonl") + read_texts(world / "retain.jsonl")
    texts += [letter_prompt(item) + " " + "ABCD"[item.answer] for item in items]
    tokenizer = train_tokenizer(texts, 2000)
    torch.manual_seed(0)
    config = tf.LlamaConfig(
        hidden_size=256,
        num_hidden_layers=8,
        num_attention_heads=8,
        intermediate_size=1024,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    tf.LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    from repe_unlearn.toy import SHIPPED_WORLD

    work = Path(tempfile.mkdtemp())
    model_dir, tasks_dir = work / "model", work / "tasks"
    tasks_dir.mkdir()
    build_model(model_dir, SHIPPED_WORLD)
    names = ["toy_forget_letter", "toy_retain_letter"]
    files = [SHIPPED_WORLD / "forget_letter.jsonl", SHIPPED_WORLD / "retain_letter.jsonl"]
    for name, path in zip(names, files, strict=True):
        (tasks_dir / f"{name}.yaml").write_text(task_yaml(name, path))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    lm_eval_s = timed(
        [
            sys.executable,
            "-m",
            "lm_eval",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={model_dir},dtype=float32",
            "--tasks",
            ",".join(names),
            "--include_path",
            str(tasks_dir),
            "--device",
            "cpu",
            "--batch_size",
            str(args.batch_size),
            "--log_samples",
            "--output_path",
            str(work / "lm_eval_out"),
        ],
        env,
    )
    ours_s = timed(
        [
            sys.executable,
            "-m",
            "repe_unlearn",
            "eval",
            "--model",
            str(model_dir),
            *[arg for f in files for arg in ("--mcq", str(f))],
            "--batch-size",
            str(args.batch_size),
            "--predictions",
            str(work / "ours.jsonl"),
            "--json",
            str(work / "ours.json"),
        ],
        env,
    )

    ours = [json.loads(line) for line in (work / "ours.jsonl").read_text().splitlines()]
    agree = total = 0
    accuracies = {}
    for name, path in zip(names, files, strict=True):
        samples_file = next((work / "lm_eval_out").rglob(f"samples_{name}_*.jsonl"))
        samples = {s["doc_id"]: s for s in map(json.loads, samples_file.read_text().splitlines())}
        mine = [row for row in ours if row["file"] == path.stem]
        hits = 0
        for row in mine:
            lls = [float(resp[0]) for resp in samples[row["index"]]["filtered_resps"]]
            theirs = max(range(len(lls)), key=lls.__getitem__)
            agree += theirs == row["pred"]
            hits += theirs == row["answer"]
            total += 1
        accuracies[name] = (hits / len(mine), sum(r["pred"] == r["answer"] for r in mine) / len(mine))
    print(f"{len(ours)} items, batch size {args.batch_size}, random Llama 8 x 256, CPU")
    print(f"{'':<22}{'seconds':>9}")
    print(f"{'lm_eval (hf)':<22}{lm_eval_s:9.1f}")
    print(f"{'repe-unlearn eval':<22}{ours_s:9.1f}")
    print(f"speed-up {lm_eval_s / ours_s:.2f}x end to end; predictions agree on {agree}/{total} items")
    for name, (theirs_acc, ours_acc) in accuracies.items():
        print(f"  {name}: accuracy lm_eval {theirs_acc:.4f}, repe-unlearn {ours_acc:.4f}")


if __name__ == "__main__":
    main()
