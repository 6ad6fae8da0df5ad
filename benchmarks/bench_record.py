"""Cost of recording activations: plain forward vs record() at all layers, and early stop.

Run: python benchmarks/bench_record.py [--layers 8 --d-model 256 --batch 8 --seq 128 --repeats 20]
Prints one table; the ratios are what matter (timings interleaved, so machine noise hits both sides alike).
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import transformers as tf

import repe_unlearn as ru


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    torch.manual_seed(0)
    config = tf.LlamaConfig(
        hidden_size=args.d_model,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=8,
        intermediate_size=4 * args.d_model,
        vocab_size=8000,
        max_position_embeddings=args.seq,
    )
    model = tf.LlamaForCausalLM(config).eval()
    inputs = {
        "input_ids": torch.randint(0, 8000, (args.batch, args.seq)),
        "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long),
    }
    middle = args.layers // 2

    def plain() -> None:
        with torch.no_grad():
            model(**inputs, use_cache=False)

    def hidden_states() -> None:
        with torch.no_grad():
            model(**inputs, use_cache=False, output_hidden_states=True)

    def record_all() -> None:
        with torch.no_grad(), ru.record(model):
            model(**inputs, use_cache=False)

    def record_middle_early_stop() -> None:
        ru.collect(model, inputs, layers=middle)

    cases = {
        "plain forward": plain,
        "output_hidden_states=True": hidden_states,
        "record(all layers)": record_all,
        f"collect(layer {middle}, stop_after)": record_middle_early_stop,
    }
    for fn in cases.values():  # warm-up
        fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):  # interleave the cases so drift affects all of them alike
        for name, fn in cases.items():
            samples[name] += timed(fn, 1)
    base = statistics.median(samples["plain forward"])
    print(
        f"Llama {args.layers} layers, d_model {args.d_model}, batch {args.batch} x {args.seq} tokens, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(f"{'case':<32} {'ms':>8} {'vs plain':>9}")
    for name, times in samples.items():
        median = statistics.median(times)
        print(f"{name:<32} {median * 1e3:8.1f} {median / base:9.3f}")


if __name__ == "__main__":
    main()
