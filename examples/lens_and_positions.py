"""Logits and cache in one call, the logit lens layer by layer, and steering only the last token, on the toy
model the package ships. Runs offline in seconds.

python examples/lens_and_positions.py
"""

import torch

import repe_unlearn as ru
from repe_unlearn.toy import notebook_setup


def main() -> None:
    model, tokenizer, _, _ = notebook_setup()
    prompt = "Pralstoux spreads through"
    inputs = tokenizer([prompt], return_tensors="pt")

    # logits and every layer's residual stream from one forward pass
    output, cache = ru.run_with_cache(model, inputs)
    answer = tokenizer.decode(output.logits[0, -1].argmax())
    print(f"{prompt!r} -> {answer!r}")

    # the logit lens: what each layer's residual would predict if the model stopped there
    for layer in cache.layers:
        top = ru.logit_lens(model, cache[layer])[0, -1].argmax()
        print(f"layer {layer}: {tokenizer.decode(top)!r}")

    # steer the last token only: earlier positions keep their activations exactly
    direction = cache.pooled("mean")[3][0]
    vector = ru.ControlVector({3: direction / direction.norm()})
    with torch.no_grad(), vector.apply(model, 20.0, positions="last"), ru.record(model, 3) as steered:
        model(**inputs)
    unchanged = torch.equal(steered[3][0, :-1], cache[3][0, :-1])
    moved = float((steered[3] - cache[3]).norm())
    print(f"earlier positions unchanged: {unchanged}; the last position moved by {moved:.1f}")
    print(f"hooks left on the model: {ru.active_hooks(model)}")


if __name__ == "__main__":
    main()
