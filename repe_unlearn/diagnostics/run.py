"""One caching pass per model over forget texts, retain texts and MCQ prompts; norms and probes read it.

For each batch every model runs once with all layers recorded (the pass stops after the last decoder layer,
so the LM head never runs); what is kept per example is small: the masked-mean and last-token vectors, the
mean per-token norm and cosines. With a base model, the same batch goes through both, so token-by-token
comparisons (cosine to base, largest difference) need no second pass.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._cache import ActivationCache, collect
from .._distributed import all_gather, is_main, my_rows
from .._masking import last_token, masked_mean, token_norms
from .._models import d_model, input_device, n_layers
from ..data import MCQItem, letter_prompt, tokenize_batches
from ..errors import ConfigError
from .probes import ProbeResult, fit_choice_probe, fit_probe
from .stats import cosine_to_direction, max_abs_difference, paired_cosine

DOMAINS = ("forget", "retain")
MIN_EXAMPLES = 10  # per text set and MCQ file: fewer leave a held-out split too small to mean anything


@dataclass
class Features:
    """What one model's caching pass keeps, per layer."""

    norms: dict[str, Tensor] = field(default_factory=dict)  # domain -> [layer example]
    cosine_to_vector: dict[str, Tensor] = field(default_factory=dict)  # domain -> [layer example]
    text_means: dict[str, Tensor] = field(default_factory=dict)  # domain -> [layer example d_model]
    mcq: dict[str, Tensor] = field(default_factory=dict)  # file -> [layer item d_model], last prompt token


@dataclass
class Diagnostics:
    """Norms, cosines and probe accuracies per layer, for the model and (optionally) its base."""

    layers: list[int]
    norms: dict[str, dict[str, list[float]]]
    probe_accuracy: dict[str, dict[str, list[float]]]
    chance: dict[str, float]
    cosine_to_control_vector: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    cosine_to_base: dict[str, list[float]] = field(default_factory=dict)
    max_abs_difference_from_base: dict[str, list[float]] = field(default_factory=dict)
    steered_layer: int | None = None
    updated_layers: list[int] | None = None
    probes: dict[str, dict[str, list[ProbeResult]]] = field(default_factory=dict, repr=False)

    def _repr_html_(self) -> str:
        """Norms and probe accuracy per layer, as a table, for notebooks."""
        models = list(self.norms)
        probes = list(self.probe_accuracy[models[0]])
        head = "".join(f"<th>norm {m} {d}</th>" for m in models for d in ("forget", "retain"))
        head += "".join(f"<th>probe {p} ({m})</th>" for p in probes for m in models)
        rows = ""
        for i, layer in enumerate(self.layers):
            mark = " ← steered" if layer == self.steered_layer else ""
            cells = "".join(f"<td>{self.norms[m][d][i]:.3g}</td>" for m in models for d in ("forget", "retain"))
            cells += "".join(f"<td>{self.probe_accuracy[m][p][i]:.2f}</td>" for p in probes for m in models)
            rows += f"<tr><td>{layer}{mark}</td>{cells}</tr>"
        chance = ", ".join(f"{k} {v:.2f}" for k, v in self.chance.items())
        return f"<b>Diagnostics</b> (chance: {chance})<table><tr><th>layer</th>{head}</tr>{rows}</table>"

    def to_dict(self) -> dict[str, Any]:
        """The ``diagnostics.json`` layout."""
        out: dict[str, Any] = {
            "layers": self.layers,
            "steered_layer": self.steered_layer,
            "updated_layers": self.updated_layers,
            "norms": self.norms,
            "probe_accuracy": self.probe_accuracy,
            "chance": self.chance,
        }
        if self.cosine_to_control_vector:
            out["cosine_to_control_vector"] = self.cosine_to_control_vector
        if self.cosine_to_base:
            out["cosine_to_base"] = self.cosine_to_base
            out["max_abs_difference_from_base"] = self.max_abs_difference_from_base
        return out


def _prompts(items: Sequence[MCQItem], format: str) -> list[str]:
    """The letter prompt (choices shown), or the cloze stem (the question alone)."""
    return [letter_prompt(item) if format == "letter" else item.question for item in items]


def cache_features(
    models: Mapping[str, nn.Module],
    tokenizer: Any,
    forget: Sequence[str],
    retain: Sequence[str],
    mcq: Mapping[str, Sequence[MCQItem]],
    *,
    format: Literal["letter", "cloze"] = "letter",
    direction: Tensor | None = None,
    batch_size: int = 32,
    max_length: int = 512,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> tuple[dict[str, Features], dict[str, list[float]], dict[str, list[float]]]:
    """The caching pass. Returns features per model and, when there is a "base", the per-layer mean cosine
    and largest difference between "model" and "base" on forget and retain text."""
    features = {name: Features() for name in models}
    paired_cos: dict[str, list[float]] = {}
    paired_diff: dict[str, list[float]] = {}
    compare = "base" in models and "model" in models
    total = sum(-(-len(t) // batch_size) for t in (forget, retain))
    total += len(models) * sum(-(-len(items) // batch_size) for items in mcq.values())
    bar = tqdm(total=total, desc="caching", disable=not (progress and is_main()), unit="batch")
    for domain, all_texts in (("forget", forget), ("retain", retain)):
        texts = all_texts[my_rows(len(all_texts))]  # under torchrun: this rank's share, gathered below
        kept: dict[str, dict[str, list[Tensor]]] = {n: {"norm": [], "cos": [], "mean": []} for n in models}
        cos_chunks: list[Tensor] = []
        diff_max: Tensor | None = None
        for batch in tokenize_batches(tokenizer, texts, batch_size, max_length=max_length):
            stacks = {}
            for name, m in models.items():
                cache = collect(m, _on(batch, m), None)
                stack, mask = cache.stack(), cache.attention_mask
                stacks[name] = (stack, mask)
                kept[name]["norm"].append(token_norms(stack, mask))
                kept[name]["mean"].append(masked_mean(stack, mask).to(dtype))
                if direction is not None:
                    kept[name]["cos"].append(cosine_to_direction(stack, direction, mask))
            if compare:
                (model_stack, mask), (base_stack, _) = stacks["model"], stacks["base"]
                cos_chunks.append(paired_cosine(model_stack, base_stack, mask))
                diffs = max_abs_difference(model_stack, base_stack, mask)
                diff_max = diffs if diff_max is None else torch.maximum(diff_max, diffs)
            bar.update()
        for name in models:
            features[name].norms[domain] = _gathered(kept[name]["norm"])
            features[name].text_means[domain] = _gathered(kept[name]["mean"])
            if direction is not None:
                features[name].cosine_to_vector[domain] = _gathered(kept[name]["cos"])
        if compare:
            paired_cos[domain] = _gathered(cos_chunks).mean(dim=1).tolist()
            maxima = [m for m in all_gather(diff_max) if m is not None]
            paired_diff[domain] = torch.stack(maxima).amax(dim=0).tolist()
    for file, items in mcq.items():
        for name, m in models.items():
            features[name].mcq[file] = mcq_features(
                m, tokenizer, items, format=format, batch_size=batch_size, max_length=max_length, dtype=dtype, bar=bar
            )
    bar.close()
    return features, paired_cos, paired_diff


def mcq_features(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[MCQItem],
    *,
    format: Literal["letter", "cloze"] = "letter",
    batch_size: int = 32,
    max_length: int = 512,
    dtype: torch.dtype = torch.float32,
    bar: Any = None,
) -> Float[Tensor, "layer item d_model"]:
    """Every layer's output at the last prompt token of each item (the letter prompt, or the cloze stem)."""
    pooled: list[Tensor] = []
    prompts = _prompts(items, format)
    for batch in tokenize_batches(tokenizer, prompts[my_rows(len(prompts))], batch_size, max_length=max_length):
        cache = collect(model, _on(batch, model), None)
        pooled.append(torch.stack([last_token(cache[i], cache.attention_mask) for i in cache.layers]))
        if bar is not None:
            bar.update()
    return _gathered(pooled).to(dtype)


def probe_per_layer(
    model: nn.Module,
    tokenizer: Any,
    train_items: Sequence[MCQItem],
    test_items: Sequence[MCQItem],
    *,
    format: Literal["letter", "cloze"] = "letter",
    batch_size: int = 32,
    max_length: int = 512,
    seed: int = 0,
) -> list[ProbeResult]:
    """Per layer, a probe fit on ``train_items`` and scored on ``test_items`` only (for instance questions
    about other entities): how well the answer can be read off the model's activations where it is not said.

    Letter format predicts the answer's letter from the last prompt token; cloze scores each choice with its
    own read-out (:func:`fit_choice_probe`; a test item's choices must all occur among the train items')."""
    if not train_items or not test_items:
        raise ConfigError(f"a probe needs train and test items, got {len(train_items)} and {len(test_items)}")
    items = [*train_items, *test_items]
    x = mcq_features(model, tokenizer, items, format=format, batch_size=batch_size, max_length=max_length)
    indices = (torch.arange(len(train_items)), torch.arange(len(train_items), len(items)))
    answers = torch.tensor([item.answer for item in items])
    if format == "letter":
        width = max(len(item.choices) for item in items)
        return [
            fit_probe(x[i], answers, n_classes=width, seed=seed, indices=indices, layer=i) for i in range(x.shape[0])
        ]
    if len({len(item.choices) for item in items}) != 1:
        raise ConfigError("cloze probes need the same number of choices in every item")
    seen = {choice for item in train_items for choice in item.choices}
    unseen = sorted({choice for item in test_items for choice in item.choices} - seen)
    if unseen:
        raise ConfigError(f"the probe never saw the choice {unseen[0]!r} in training; it cannot score it")
    texts = sorted({choice for item in items for choice in item.choices})
    index = {text: k for k, text in enumerate(texts)}
    ids = torch.tensor([[index[c] for c in item.choices] for item in items])
    return [
        fit_choice_probe(x[i], ids, answers, n_values=len(texts), seed=seed, indices=indices, layer=i)
        for i in range(x.shape[0])
    ]


def _gathered(chunks: list[Tensor]) -> Tensor:
    """Per-batch ``[layer example ...]`` chunks of every rank, concatenated over examples in rank order."""
    local = torch.cat(chunks, dim=1) if chunks else None
    parts = [part for part in all_gather(local) if part is not None]
    return torch.cat(parts, dim=1)


def _on(batch: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    device = input_device(model)
    return {k: v.to(device) for k, v in batch.items()}


def diagnose(
    model: nn.Module,
    tokenizer: Any,
    forget: Sequence[str],
    retain: Sequence[str],
    mcq: Mapping[str, Sequence[MCQItem]],
    *,
    base: nn.Module | None = None,
    format: Literal["letter", "cloze"] = "letter",
    direction: Tensor | None = None,
    steered_layer: int | None = None,
    updated_layers: Sequence[int] | None = None,
    batch_size: int = 32,
    max_length: int = 512,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    progress: bool = False,
) -> Diagnostics:
    """Norms, cosines and probes per layer for ``model`` (and ``base``), from one caching pass per model.

    Texts and prompts are cut at ``max_length`` tokens, so memory is bounded by the settings
    (``batch_size × max_length`` tokens a pass), not by the documents' lengths."""
    if format not in ("letter", "cloze"):
        raise ConfigError(f"unknown format {format!r}; valid: letter, cloze")
    if not forget or not retain:
        raise ConfigError("diagnose needs forget and retain texts")
    sizes = {"forget texts": len(forget), "retain texts": len(retain), **{f"{k} items": len(v) for k, v in mcq.items()}}
    small = {k: n for k, n in sizes.items() if n < MIN_EXAMPLES}
    if small:  # a probe tested on a handful of held-out examples reports noise as accuracy
        shown = ", ".join(f"{k}: {n}" for k, n in small.items())
        raise ConfigError(f"probes need at least {MIN_EXAMPLES} examples per set; got {shown}")
    if format == "cloze":
        for file, items in mcq.items():
            if len({len(item.choices) for item in items}) != 1:
                raise ConfigError(f"{file}: cloze probes need the same number of choices in every item")
    if base is not None and n_layers(base) != n_layers(model):
        raise ConfigError(f"the base model has {n_layers(base)} layers, the model {n_layers(model)}")
    if base is not None and d_model(base) != d_model(model):
        raise ConfigError(f"the base model's d_model is {d_model(base)}, the model's {d_model(model)}: not its base")
    models = {"model": model} if base is None else {"base": base, "model": model}
    features, paired_cos, paired_diff = cache_features(
        models,
        tokenizer,
        forget,
        retain,
        mcq,
        format=format,
        direction=direction,
        batch_size=batch_size,
        max_length=max_length,
        dtype=dtype,
        progress=progress,
    )
    layers = list(range(n_layers(model)))
    norms = {name: {d: f.norms[d].mean(dim=1).tolist() for d in DOMAINS} for name, f in features.items()}
    cosines = {}
    if direction is not None:
        cosines = {
            name: {d: f.cosine_to_vector[d].mean(dim=1).tolist() for d in DOMAINS} for name, f in features.items()
        }
    probes: dict[str, dict[str, list[ProbeResult]]] = {}
    for name, f in features.items():
        probes[name] = {}
        domain_x = torch.cat([f.text_means["forget"], f.text_means["retain"]], dim=1)
        domain_y = torch.cat([torch.zeros(len(forget)), torch.ones(len(retain))]).long()
        probes[name]["domain"] = [fit_probe(domain_x[i], domain_y, n_classes=2, seed=seed, layer=i) for i in layers]
        for file, items in mcq.items():
            answers = torch.tensor([item.answer for item in items])
            x = f.mcq[file]
            if format == "cloze":
                texts = sorted({choice for item in items for choice in item.choices})
                index = {text: k for k, text in enumerate(texts)}
                ids = torch.tensor([[index[c] for c in item.choices] for item in items])
                probes[name][file] = [
                    fit_choice_probe(x[i], ids, answers, n_values=len(texts), seed=seed, layer=i) for i in layers
                ]
            else:
                width = max(len(item.choices) for item in items)
                probes[name][file] = [fit_probe(x[i], answers, n_classes=width, seed=seed, layer=i) for i in layers]
    accuracy = {name: {k: [r.test_accuracy for r in v] for k, v in per.items()} for name, per in probes.items()}
    first = next(iter(probes.values()))
    chance = {k: max(r.chance for r in v) for k, v in first.items()}
    return Diagnostics(
        layers,
        norms,
        accuracy,
        chance,
        cosines,
        paired_cos,
        paired_diff,
        steered_layer,
        list(updated_layers) if updated_layers is not None else None,
        probes,
    )


def cache_norms(cache: ActivationCache) -> dict[int, float]:
    """Mean per-token norm per layer of a cache a user already holds (padding excluded)."""
    return {layer: float(token_norms(cache[layer], cache.attention_mask).mean()) for layer in cache.layers}
