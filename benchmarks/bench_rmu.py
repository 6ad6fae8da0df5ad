"""RMU step cost: this package's trainer vs a faithful re-implementation of the published loop.

Both run in reference mode on the same randomly initialised 32-layer Llama (d_model 384, vocab 32000),
ℓ=7, layers 5,6,7, batch 4 texts cut at 512 tokens, fp32, CPU, each in its own process so that peak memory is
its own. The baseline (``repe_unlearn.rmu.reference_rmu``) is the published loop with the published
optimizer (transformers' pre-v5 AdamW), right truncation and per-topic forget lengths; both sides tokenize
the same texts (random words of a 32000-word vocabulary) with the same word-level tokenizer.

    python benchmarks/bench_rmu.py [--steps 6 --layers 32 --d-model 384 --seq 512]

Prints seconds per step (median), peak resident memory above the interpreter's (torch imported, no model),
the ratios, and the largest relative difference between the two runs' per-step losses and final weights.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

VOCAB = 32000


def worker(args: argparse.Namespace) -> None:
    import random

    import torch
    import transformers as tf
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    from repe_unlearn.rmu import RMUConfig, reference_rmu, unlearn

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    baseline = rss_mb()
    words = [f"w{i}" for i in range(VOCAB - 1)]
    spec = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["</s>", *words])}, unk_token="</s>"))
    spec.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=spec, eos_token="</s>", pad_token="</s>")
    rng = random.Random(1)
    # texts longer than the cut, of varied lengths: every batch is truncated and left-padded
    n_texts = 4 * args.steps

    def texts() -> list[str]:
        return [" ".join(rng.choices(words, k=rng.randint(args.seq // 2, args.seq + 64))) for _ in range(n_texts)]

    forget, retain = [texts()], [texts()]
    torch.manual_seed(0)
    config = tf.LlamaConfig(
        hidden_size=args.d_model,
        num_hidden_layers=args.layers,
        num_attention_heads=6,
        num_key_value_heads=6,
        intermediate_size=1024,
        vocab_size=VOCAB,
        max_position_embeddings=args.seq,
    )
    model = tf.LlamaForCausalLM(config)
    rmu_config = RMUConfig(
        layer=7,
        update_layers=(5, 6, 7),
        steering_coeff=(6.5,),
        alpha=(1200.0,),
        lr=5e-5,
        batch_size=4,
        max_batches=args.steps,
        max_length=args.seq,
        forget_max_length=(args.seq,),
        reference_mode=True,
    )
    if args.worker == "reference":
        rows = reference_rmu(model, tokenizer, forget, retain, rmu_config)
        losses = [(f, r) for f, r, _ in rows]
        seconds = [sec for _, _, sec in rows]
    else:
        result = unlearn(model, tokenizer, forget, retain, rmu_config, progress=False)
        losses = [(log.forget_loss, log.retain_loss) for log in result.history]
        seconds = [log.step_seconds for log in result.history]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    names = [f"model.layers.{i}.mlp.down_proj.weight" for i in (5, 6, 7)]
    params = dict(model.named_parameters())
    save_file({name: params[name].detach().contiguous() for name in names}, args.weights)
    print(json.dumps({"seconds": seconds, "losses": losses, "peak_mb": peak - baseline}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=384)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    runs, weights = {}, {}
    tmp = Path(tempfile.mkdtemp())
    for name in ("reference", "ours"):
        weights[name] = tmp / f"{name}.safetensors"
        argv = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--steps",
            str(args.steps),
            "--layers",
            str(args.layers),
            "--d-model",
            str(args.d_model),
            "--seq",
            str(args.seq),
            "--weights",
            str(weights[name]),
        ]
        out = subprocess.run(argv, capture_output=True, text=True, check=True)
        runs[name] = json.loads(out.stdout.strip().splitlines()[-1])
    ref, ours = runs["reference"], runs["ours"]
    # the first step of each run pays one-off allocation costs: report the median of the rest
    ref_s, ours_s = statistics.median(ref["seconds"][1:]), statistics.median(ours["seconds"][1:])
    def worst(which: int) -> float:
        return max(
            (abs(a[which] - b[which]) / abs(b[which]) for a, b in zip(ours["losses"], ref["losses"], strict=True)
             if abs(b[which]) > 1e-12),
            default=0.0,
        )  # fmt: skip

    retain_sizes = [b[1] for b in ref["losses"]]
    from safetensors.torch import load_file

    theirs, mine = load_file(weights["reference"]), load_file(weights["ours"])
    weight_diff = max(float((mine[k] - theirs[k]).norm() / theirs[k].norm()) for k in theirs)
    print(
        f"Llama {args.layers} layers, d_model {args.d_model}, batch 4 x {args.seq} tokens, fp32 CPU, "
        f"l=7, layers 5-7, {args.steps} steps, legacy AdamW"
    )
    print(f"{'':<28}{'s/step':>9}{'peak MB':>10}")
    print(f"{'published loop (reference)':<28}{ref_s:9.2f}{ref['peak_mb']:10.0f}")
    print(f"{'repe_unlearn':<28}{ours_s:9.2f}{ours['peak_mb']:10.0f}")
    print(
        f"speed-up {ref_s / ours_s:.2f}x, peak memory {ours['peak_mb'] / ref['peak_mb']:.2f}x of the reference, "
        f"final weights {weight_diff:.2e} relative"
    )
    print(
        f"largest relative difference per step: forget loss {worst(0):.2e}, retain loss {worst(1):.2e} "
        f"(retain losses of the reference: {min(retain_sizes):.2e} to {max(retain_sizes):.2e})"
    )


if __name__ == "__main__":
    main()
