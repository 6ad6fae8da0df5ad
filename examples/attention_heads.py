"""Attention heads on the toy model the package ships: which heads carry a fact (a clean/corrupted patching
sweep over layers x heads), where the most important one looks (its attention pattern), and what zeroing it
does. Runs offline in seconds.

python examples/attention_heads.py
"""

import torch

import repe_unlearn as ru
from repe_unlearn.data import read_mcq
from repe_unlearn.toy import SHIPPED_WORLD, notebook_setup


def main() -> None:
    model, tokenizer, _, _ = notebook_setup()
    model.set_attn_implementation("eager")  # attention patterns exist only with eager attention

    def ids(text: str) -> torch.Tensor:
        return tokenizer(text, return_tensors="pt")["input_ids"]

    items = [i for i in read_mcq(SHIPPED_WORLD / "forget_cloze.jsonl") if i.question.endswith("spreads through")]
    clean_item = items[0]
    corrupt_item = next(
        i
        for i in items[1:]
        if ids(i.question).shape == ids(clean_item.question).shape
        and i.choices[i.answer] != clean_item.choices[clean_item.answer]
    )
    clean, corrupted = {"input_ids": ids(clean_item.question)}, {"input_ids": ids(corrupt_item.question)}
    right = int(ids(" " + clean_item.choices[clean_item.answer])[0, 0])
    wrong = int(ids(" " + corrupt_item.choices[corrupt_item.answer])[0, 0])

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[0, -1, right] - logits[0, -1, wrong]

    # patch each head's output (before the output projection mixes the heads) from the clean run
    sweep = ru.patching_sweep(model, clean, corrupted, metric, over="heads")
    print(f"{clean_item.question!r}: metric clean {sweep.clean:.2f}, corrupted {sweep.corrupted:.2f}")
    print("effect of patching one head [layer x head]:")
    for layer, row in zip(sweep.layers, sweep.effects, strict=True):
        print(f"  layer {layer}: " + " ".join(f"{float(e):+.2f}" for e in row))
    flat = int(sweep.effects.argmax())
    layer, head = sweep.layers[flat // sweep.effects.shape[1]], flat % sweep.effects.shape[1]

    # where that head looks from the last token
    _, pattern = ru.run_with_cache(model, clean, layer, "attn_pattern")
    tokens = [tokenizer.decode(t) for t in clean["input_ids"][0]]
    weights = pattern[layer][0, head, -1]
    top = int(weights.argmax())
    share = float(weights[top])
    print(f"head {head} of layer {layer} attends from the last token mostly to {tokens[top]!r} ({share:.2f})")

    # zero it and see the answer's margin fall
    with torch.no_grad(), ru.ablate_heads(model, {layer: head}):
        ablated = float(metric(model(**clean).logits))
    print(f"zeroing it moves the clean margin from {sweep.clean:.2f} to {ablated:.2f}")
    print(f"hooks left on the model: {ru.active_hooks(model)}")


if __name__ == "__main__":
    main()
