"""Steering quickstart on a tiny random Llama: record, steer, ablate, save. Runs offline in seconds.

python examples/steering_quickstart.py
"""

import tempfile
from pathlib import Path

import torch
import transformers as tf

import repe_unlearn as ru


def main() -> None:
    torch.manual_seed(0)
    config = tf.LlamaConfig(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, vocab_size=100
    )
    model = tf.LlamaForCausalLM(config).eval()
    inputs = {"input_ids": torch.randint(0, 100, (2, 10)), "attention_mask": torch.ones(2, 10, dtype=torch.long)}

    with torch.no_grad(), ru.record(model) as cache:
        logits = model(**inputs).logits
    print(cache)

    direction = cache.pooled("mean")[2].mean(0)  # the mean activation at layer 2, as a toy direction
    vector = ru.ControlVector({2: direction / direction.norm()}, metadata={"source": "mean activation"})
    with torch.no_grad(), vector.apply(model, coeff=8.0), ru.record(model, layers=2) as steered:
        steered_logits = model(**inputs).logits
    shift = (steered[2] - cache[2]).norm(dim=-1).mean()
    change = (steered_logits - logits).abs().max()
    print(f"steering moved layer 2 by {shift:.2f} (coeff 8.0); logits changed by {change:.3f}")

    with torch.no_grad(), vector.ablate(model), ru.record(model, layers=2) as ablated:
        model(**inputs)
    print(f"after ablation, |projection on the direction| <= {(ablated[2] @ vector[2]).abs().max():.2e}")
    print("hooks left on the model:", ru.active_hooks(model))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vector.safetensors"
        vector.save(path)
        print("reloaded:", ru.ControlVector.load(path))


if __name__ == "__main__":
    main()
