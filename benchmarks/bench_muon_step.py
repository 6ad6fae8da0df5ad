"""One optimizer step on the default toy model: AdamW, this package's Muon (float32) and torch's Muon (bfloat16).

Builds the default `toy pretrain` model (4 layers, d_model 128, vocabulary 1024), gives every weight a random
gradient, and times ``step()`` of each optimizer as `build_optimizer` makes it (torch's Muon, where torch has
one, on the same decoder matrices with ``adjust_lr_fn="match_rms_adamw"``), side by side in one run.

    python benchmarks/bench_muon_step.py [--threads 1] [--repeats 10]

Measured (docs/toy-world.md, one thread, AVX2 CPU): AdamW 4 ms, Muon here 57 ms, torch's Muon 1.2-2 s.
"""

import argparse
import dataclasses
import importlib
import time

import torch

from repe_unlearn.toy import PretrainConfig

pretraining = importlib.import_module("repe_unlearn.toy.pretrain")  # the module, not the function


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = PretrainConfig()
    tokenizer = pretraining.train_tokenizer([f"word{i} " * 3 for i in range(3000)], config.vocab_size)

    def timed(make: object) -> float:
        torch.manual_seed(0)
        model = pretraining.build_model(config, tokenizer)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        optimizer = make(model)  # type: ignore[operator]
        optimizer.step()  # state allocated outside the timing
        start = time.perf_counter()
        for _ in range(args.repeats):
            optimizer.step()
        return (time.perf_counter() - start) / args.repeats * 1000

    rows = [
        ("AdamW", lambda m: pretraining.build_optimizer(config, m)),
        (
            "Muon (repe_unlearn, float32)",
            lambda m: pretraining.build_optimizer(dataclasses.replace(config, optimizer="muon"), m),
        ),
    ]
    if hasattr(torch.optim, "Muon"):

        def torchs(model: torch.nn.Module) -> object:
            matrices = [p for n, p in model.named_parameters() if p.ndim == 2 and ".layers." in f".{n}"]
            return torch.optim.Muon(matrices, lr=config.lr, adjust_lr_fn="match_rms_adamw")

        rows.append(("torch.optim.Muon (bfloat16), matrices only", torchs))
    print(f"| optimizer step, {args.threads} thread(s) | ms |\n|---|---:|")
    for name, make in rows:
        print(f"| {name} | {timed(make):.1f} |", flush=True)


if __name__ == "__main__":
    main()
