"""The memory arithmetic of docs/scaling.md: RMU on layers 0..l only vs the published loop, per model.

    python benchmarks/memory_arithmetic.py

bf16 (2 bytes per value), l=7, the MLP output projections of layers 5-7 updated, batch 4 x 512 tokens.
Activations kept for one backward pass are estimated at (4 d_mlp + 8 d) values per token per layer (the
normed inputs, q/k/v and the attention output, the gate, up and activated MLP values; sdpa keeps no
attention matrix). Prints GB (10^9 bytes).
"""

from dataclasses import dataclass

B = 2  # bytes per bf16 value
TOKENS = 4 * 512
L, UPDATED = 7, 3


@dataclass(frozen=True)
class Model:
    name: str
    d: int
    d_mlp: int
    layers: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool = False

    @property
    def layer_params(self) -> int:
        head = self.d // self.heads
        attention = 2 * self.d * self.d + 2 * self.d * self.kv_heads * head
        return attention + 3 * self.d * self.d_mlp + 2 * self.d

    @property
    def embedding(self) -> int:
        return self.vocab * self.d

    @property
    def weights(self) -> int:
        return (self.layers * self.layer_params + self.embedding * (1 if self.tied else 2) + self.d) * B

    def activations(self, n_layers: int) -> int:
        return n_layers * TOKENS * (4 * self.d_mlp + 8 * self.d) * B


MODELS = [
    Model("Zephyr-7B / Mistral-7B", 4096, 14336, 32, 32000, 32, 8),
    Model("Llama-3-8B", 4096, 14336, 32, 128256, 32, 8),
    Model("Llama-3-70B", 8192, 28672, 80, 128256, 64, 8),
]


def gb(n: float) -> str:
    return f"{n / 1e9:.1f}"


def main() -> None:
    print("| | " + " | ".join(m.name for m in MODELS) + " |")
    print("|---|" + "---:|" * len(MODELS))
    rows: dict[str, list[str]] = {}
    ours_total, theirs_total = [], []
    for m in MODELS:
        first = ((L + 1) * m.layer_params + m.embedding) * B
        s = UPDATED * m.d * m.d_mlp * B
        state = 4 * s  # frozen copies, gradients, AdamW's two moments
        acts = m.activations(UPDATED) + TOKENS * m.d_mlp * 3 * B  # + transient MLP values of one no-grad layer
        ours = first + state + acts
        # published: two full models, gradients of everything feeding h_l, activations of every layer + logits
        theirs = 2 * m.weights + first + m.activations(m.layers) + TOKENS * m.vocab * B + 2 * s
        ours_total.append(ours)
        theirs_total.append(theirs)
        for key, value in [
            ("weights W (all layers, embeddings, LM head)", m.weights),
            ("layers 0..7 and the embeddings (what is loaded)", first),
            ("selected tensors S (3 x down_proj)", s),
            ("frozen copies + gradients + AdamW (4S)", state),
            ("activations, batch 4 x 512, layers 5-7", acts),
        ]:
            rows.setdefault(key, []).append(gb(value))
    for key, values in rows.items():
        print(f"| {key} | " + " | ".join(values) + " |")
    print("| **this package (layers 0..7 only)** | " + " | ".join(f"**{gb(v)}**" for v in ours_total) + " |")
    print("| published loop (2W + gradients + every layer's activations + logits) | "
          + " | ".join(gb(v) for v in theirs_total) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
