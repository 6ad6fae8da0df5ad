"""Teach a model that knows facts from prose to answer them as letter-format (WMDP-style) questions.

A small model trained on prose completes a fact's cloze stem ("Pralstoux spreads through") but answers the same
fact asked in lm-eval's letter format at chance, and training letter questions into it from scratch does not
carry over to entities whose letter questions it never saw: it memorises them (docs/toy-world.md). What does
carry over: keep the model frozen, stack ``layers`` new decoder layers on top, and train only those (with the
final norm and an untied copy of the unembedding) on answered letter questions about some entities, mixed with
prose so that the cloze answers stay, with three helps on the trained questions only:

- a loss on where three heads attend (cross-entropy of the head's attention against a target position): in the
  first new layer, head 0 from each choice's first token to that choice's letter and head 1 from the last token
  ("Answer:") to the question's last token, where the frozen model recalls the fact; in the last new layer,
  the first ``match_heads`` heads from "Answer:" to the right choice's first token;
- three distractors drawn afresh from the relation's values for a ``fresh`` share of the questions, so that
  remembering which of a question's four choices was right does not answer it;
- two logit-lens losses after the first new layer: each choice's first token reads as itself, and "Answer:" as
  the right choice's first token (the recall, carried to where the letter is predicted).

Nothing is guided at evaluation; the result is a plain model of the base's class that `evaluate_mcq` scores as
lm-eval scores WMDP, and every weight of the base is unchanged.
"""

import copy
import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._models import decoder_layers, final_norm, find_layers_path
from .._reading import LETTERS, MCQItem, letter_prompt
from ..data import encode, pad_batch, pad_id
from ..errors import ArchitectureError, DataError
from ..evaluation import evaluate_mcq
from .config import LetterConfig

WARMUP = 50  # linear warm-up steps before the cosine decay
# the projections that write a layer's attention and MLP outputs into the residual stream, as transformers names them
OUTPUT_PROJECTIONS = ("o_proj", "down_proj", "c_proj", "out_proj", "dense", "dense_4h_to_h", "fc_out", "fc2")


@dataclass(frozen=True)
class Landmarks:
    """Where the guided heads look in one letter prompt (token indices)."""

    ids: list[int]  # the prompt's tokens, ending at "Answer:"
    question_end: int  # the question line's last token
    letters: list[int]  # each choice's letter ("B" in "B. silt dust")
    firsts: list[int]  # each choice's first token


def landmarks(tokenizer: Any, item: MCQItem) -> Landmarks:
    """The landmarks of ``item``'s letter prompt, found through the tokenizer's offset mapping."""
    prompt = letter_prompt(item)
    try:
        encoding = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError) as error:  # slow tokenizers have no offsets
        raise ArchitectureError(f"the tokenizer gives no character offsets ({error}); use a fast tokenizer") from None
    spans = [(int(start), int(end)) for start, end in encoding["offset_mapping"]]

    def token_at(char: int) -> int:
        """The first token that covers ``char`` or, where none does (a space some tokenizers drop), follows it."""
        for index, (start, end) in enumerate(spans):
            if end > char and end > start:
                return index
        raise DataError(f"no token at character {char} of the prompt {prompt!r}")

    question = item.question.strip()
    cursor = len(question) + 1  # after the question's line break
    letters, firsts = [], []
    for choice in item.choices:
        letters.append(token_at(cursor))
        firsts.append(token_at(cursor + 3))  # "B. " then the choice's first character
        cursor += 3 + len(choice) + 1
    return Landmarks(list(encoding["input_ids"]), token_at(len(question) - 1), letters, firsts)


def stack_layers(base: Any, config: LetterConfig) -> tuple[Any, list[nn.Parameter]]:
    """A model of ``base``'s class with ``config.layers`` new decoder layers on top of a copy of ``base``'s, and
    the parameters to train: the new layers, the final norm and an untied copy of the unembedding. The new layers
    start with zero output projections, so the stacked model starts computing what ``base`` computes."""
    base_config: Any = getattr(base, "config", None)
    depth = getattr(base_config, "num_hidden_layers", None)
    if not isinstance(depth, int) or len(decoder_layers(base)) != depth:
        raise ArchitectureError(
            f"{type(base).__name__} has no config.num_hidden_layers matching its decoder layers; cannot stack layers"
        )
    stacked_config = copy.deepcopy(base_config)
    stacked_config.num_hidden_layers = depth + config.layers
    if getattr(stacked_config, "layer_types", None) is not None:
        stacked_config.layer_types = list(stacked_config.layer_types) + [stacked_config.layer_types[-1]] * config.layers
    stacked_config.tie_word_embeddings = False  # the letters' output rows must move without moving the inputs
    with torch.device("cpu"):
        model = type(base)(stacked_config)
    path = find_layers_path(model)
    new = tuple(f"{path}.{i}." for i in range(depth, depth + config.layers))
    head = base.get_output_embeddings()
    head_name = next(name for name, module in model.named_modules() if module is model.get_output_embeddings())
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    if unexpected or any(not key.startswith((*new, head_name + ".")) for key in missing):
        raise ArchitectureError(f"stacking {type(base).__name__} left weights unplaced: {missing + unexpected}")
    model.get_output_embeddings().weight.data.copy_(head.weight.data)
    norm_name = next(name for name, module in model.named_modules() if module is final_norm(model))
    trained = []
    for name, parameter in model.named_parameters():
        if name.startswith(new) and parameter.dim() == 2:
            if name.rsplit(".", 2)[-2] in OUTPUT_PROJECTIONS:
                nn.init.zeros_(parameter)  # what the new layers add starts at zero: the stacked model is the base
            else:
                nn.init.normal_(parameter, std=config.init_std)
        elif name.startswith(new) and name.endswith(".bias") and "norm" not in name and "ln" not in name:
            nn.init.zeros_(parameter)
        if name.startswith(new) and ".mlp." in name and not config.mlp:
            parameter.data.zero_()
            parameter.requires_grad_(False)
            continue
        parameter.requires_grad_(name.startswith((*new, norm_name + ".", head_name + ".")))
        if parameter.requires_grad:
            trained.append(parameter)
    return model.eval(), trained  # eval: no dropout, in the frozen layers above all


def check_model(base: Any, config: LetterConfig) -> None:
    """Refuse a model the recipe cannot stack on: too few heads for the guide (one line)."""
    n_heads = getattr(getattr(base, "config", None), "num_attention_heads", None)
    if not isinstance(n_heads, int):
        raise ArchitectureError(f"{type(base).__name__}'s config names no num_attention_heads")
    if config.guide and max(2, config.match_heads) > n_heads:
        advice = "lower --match-heads, or --guide 0" if n_heads >= 2 else "the first new layer guides two: --guide 0"
        raise ArchitectureError(
            f"the attention guide uses {max(2, config.match_heads)} heads; the model has {n_heads} per layer ({advice})"
        )


def _template(item: MCQItem) -> str:
    """The question with its entity blanked: the questions of one relation share it."""
    return item.question.replace(item.entity, "{}") if item.entity else item.question


def reshuffled(item: MCQItem, rng: random.Random) -> MCQItem:
    """``item`` with its choices in a fresh order."""
    choices = list(item.choices)
    rng.shuffle(choices)
    return MCQItem(item.question, tuple(choices), choices.index(item.choices[item.answer]), item.entity)


@dataclass
class LetterRun:
    """What `train_letters` did: steps, seconds, the last losses and every check's accuracies."""

    steps: int
    seconds: float
    trained_parameters: int
    frozen_layers: int
    losses: dict[str, float] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)


def train_letters(
    base: Any,
    tokenizer: Any,
    prose: Sequence[str],
    questions: Sequence[MCQItem],
    config: LetterConfig | None = None,
    *,
    checks: Mapping[str, Sequence[MCQItem]] | None = None,
    progress: bool = True,
    report: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[Any, LetterRun]:
    """Stack `LetterConfig.layers` new layers on the frozen ``base`` and train them to answer ``questions``.

    Args:
        base: a causal LM that knows the facts (it is not modified; the result holds a copy of its weights).
        tokenizer: its (fast) tokenizer.
        prose: documents the base was trained on, mixed into every step so that its cloze answers stay.
        questions: the letter questions to train on (each with its ``entity``; the question line should be the
            words the base completes, such as the fact's cloze stem).
        config: the recipe (`LetterConfig`'s defaults when None).
        checks: letter-format sets scored every ``config.eval_every`` steps and at the end.
        progress: show a progress bar with the losses and the last check.
        report: called with ``(step, accuracies)`` after every check.

    Returns:
        The stacked model (in eval mode, its attention back to the base's implementation) and the run's record.
    """
    config = config or LetterConfig()
    questions = list(questions)
    if len(questions) < 4:
        raise DataError(f"{len(questions)} letter questions to train on; at least 4 are needed")
    if any(len(item.choices) < 2 for item in questions):
        raise DataError("a letter question to train on has fewer than 2 choices")
    if config.prose and not prose:
        raise DataError("no prose to mix in (pass the corpora the model was trained on, or set prose=0)")
    check_model(base, config)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    depth = len(decoder_layers(base))
    model, trained = stack_layers(base, config)
    implementation = getattr(model.config, "_attn_implementation", None) or "sdpa"
    model.set_attn_implementation("eager")  # attention weights that carry a gradient
    first, last = depth, depth + config.layers - 1
    pad = pad_id(tokenizer)
    limit = int(getattr(model.config, "max_position_embeddings", None) or 2048)
    eos = [tokenizer.eos_token_id] if isinstance(getattr(tokenizer, "eos_token_id", None), int) else []
    answer_ids = [encode(tokenizer, " " + letter) for letter in LETTERS[: max(len(q.choices) for q in questions)]]
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ArchitectureError(
            f"the tokenizer has {len(tokenizer)} tokens; the model embeds {rows}: not its tokenizer?"
        )
    longest = 0
    for item in questions:  # every prompt's layout is checked before the first step
        longest = max(longest, len(landmarks(tokenizer, item).ids) + len(answer_ids[item.answer]))
    if longest > limit:
        raise DataError(f"a letter prompt with its answer is {longest} tokens; the model takes at most {limit}")
    pools: dict[str, set[str]] = {}  # each relation's values, from the trained questions' choices
    for item in questions:
        pools.setdefault(_template(item), set()).update(item.choices)
    pool = {key: sorted(values) for key, values in pools.items()}

    def drawn(item: MCQItem) -> MCQItem:
        """``item`` with its distractors drawn afresh from its relation's values, in a fresh order."""
        right = item.choices[item.answer]
        values = [v for v in pool[_template(item)] if v != right]
        if len(values) < len(item.choices) - 1:  # a relation too rare to draw other values from
            return reshuffled(item, rng)
        others = rng.sample(values, len(item.choices) - 1)
        return reshuffled(MCQItem(item.question, (right, *others), 0, item.entity), rng)

    def lens(hidden: Tensor) -> Tensor:
        """The logit lens, with its gradient: the unembedding of the final norm of ``hidden``."""
        return model.get_output_embeddings()(final_norm(model)(hidden))

    def check() -> dict[str, float]:
        with torch.no_grad():
            return {
                name: evaluate_mcq(model, tokenizer, list(items), format="letter", batch_size=64, name=name).accuracy
                for name, items in (checks or {}).items()
            }

    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=0.0)
    batch = min(config.batch_size, len(questions))
    run = LetterRun(0, 0.0, sum(p.numel() for p in trained), depth)
    bar = tqdm(total=config.steps, desc="letters", disable=not progress, unit="step")
    start = time.perf_counter()
    try:  # in eval mode throughout: dropout would blur the frozen model's recall
        for step in range(config.steps):
            factor = min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * step / config.steps))
            for group in optimizer.param_groups:
                group["lr"] = config.lr * factor
            asked = [
                drawn(item) if rng.random() < config.fresh else reshuffled(item, rng)
                for item in rng.sample(questions, batch)
            ]
            shown = [landmarks(tokenizer, item) for item in asked]
            rows = [mark.ids + answer_ids[item.answer] for item, mark in zip(asked, shown, strict=True)]
            x, mask = pad_batch(rows, pad)
            labels = torch.full_like(x, -100)
            for row, (item, mark) in enumerate(zip(asked, shown, strict=True)):
                labels[row, len(mark.ids) : len(rows[row])] = torch.tensor(answer_ids[item.answer])
            ends = [len(mark.ids) - 1 for mark in shown]  # "Answer:"'s last token, which predicts the letter
            out = model(
                input_ids=x,
                attention_mask=mask,
                output_attentions=bool(config.guide),
                output_hidden_states=bool(config.identity or config.carry),
            )
            letter_loss = nn.functional.cross_entropy(
                out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100
            )
            loss = letter_loss
            parts = {"letter": letter_loss.item()}
            if config.guide:
                eps = 1e-6
                terms = []
                for row, (item, mark) in enumerate(zip(asked, shown, strict=True)):
                    bind = out.attentions[first][row, 0]  # (queries, keys)
                    terms += [-torch.log(bind[f, k] + eps) for f, k in zip(mark.firsts, mark.letters, strict=True)]
                    terms.append(-torch.log(out.attentions[first][row, 1, ends[row], mark.question_end] + eps))
                    for head_index in range(config.match_heads):
                        weights = out.attentions[last][row, head_index, ends[row]]
                        terms.append(-torch.log(weights[mark.firsts[item.answer]] + eps))
                guide_loss = torch.stack(terms).mean()
                loss = loss + config.guide * guide_loss
                parts["guide"] = guide_loss.item()
            if config.identity or config.carry:
                logits = lens(out.hidden_states[first + 1])
                where: list[tuple[int, int, int, float]] = []  # row, position, the token it should read as, weight
                for row, (item, mark) in enumerate(zip(asked, shown, strict=True)):
                    if config.identity:
                        where += [(row, f, mark.ids[f], config.identity) for f in mark.firsts]
                    if config.carry:
                        where.append((row, ends[row], mark.ids[mark.firsts[item.answer]], config.carry))
                index = torch.tensor([(r, p) for r, p, _, _ in where])
                picked = logits[index[:, 0], index[:, 1]]
                want = torch.tensor([t for _, _, t, _ in where])
                weight = torch.tensor([w for _, _, _, w in where])
                lens_loss = (nn.functional.cross_entropy(picked, want, reduction="none") * weight).sum() / len(asked)
                loss = loss + lens_loss
                parts["lens"] = lens_loss.item()
            if config.prose:
                drawn_prose = rng.sample(list(prose), min(config.prose, len(prose)))
                texts = [encode(tokenizer, text)[: limit - 1] + eos for text in drawn_prose]
                px, pmask = pad_batch(texts, pad)
                prose_logits = model(input_ids=px, attention_mask=pmask).logits[:, :-1]
                prose_labels = px.masked_fill(pmask == 0, -100)[:, 1:]
                prose_loss = nn.functional.cross_entropy(
                    prose_logits.flatten(0, 1), prose_labels.flatten(), ignore_index=-100
                )
                loss = loss + prose_loss
                parts["prose"] = prose_loss.item()
            if not torch.isfinite(loss):
                raise DataError(f"the loss became {loss.item()} at step {step + 1}; lower lr")
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            run.steps, run.losses = step + 1, parts
            postfix = {name: f"{value:.3f}" for name, value in parts.items()}
            if checks and ((step + 1) % config.eval_every == 0 or step + 1 == config.steps):
                scores = check()
                run.checks.append({"step": step + 1, **scores})
                if report is not None:
                    report(step + 1, scores)
            if run.checks:
                postfix.update({name: f"{value:.2f}" for name, value in run.checks[-1].items() if name != "step"})
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
    finally:
        bar.close()
        run.seconds = time.perf_counter() - start
        model.set_attn_implementation(implementation)
        model.eval()
        for parameter in model.parameters():  # as from_pretrained leaves them
            parameter.requires_grad_(True)
    model.config.repe_unlearn_letters = {
        "frozen_layers": depth,
        "new_layers": config.layers,
        "steps": run.steps,
        "seconds": round(run.seconds, 1),
        **{k: v for k, v in config.to_dict().items() if k not in ("steps",)},
    }
    return model, run


@dataclass(frozen=True)
class WorldLetters:
    """A world's letter questions as `train_letters` uses them: the prose, the questions to train on (the
    entities of letter_train.jsonl) and the unseen entities' questions, forget and retain, with the cloze stem as
    the question line; and the cloze questions, to check that the facts stay known."""

    prose: list[str]
    trained: list[MCQItem]
    forget_unseen: list[MCQItem]
    retain_unseen: list[MCQItem]
    forget_cloze: list[MCQItem]
    retain_cloze: list[MCQItem]


WORLD_FILES = (
    "forget.jsonl",
    "retain.jsonl",
    "forget_letter_stem.jsonl",
    "retain_letter_stem.jsonl",
    "forget_letter_stem_unseen.jsonl",
    "retain_letter_stem_unseen.jsonl",
    "forget_cloze.jsonl",
    "retain_cloze.jsonl",
)


def world_letters(world: str | os.PathLike[str]) -> WorldLetters:
    """Read what `train_letters` needs from a directory written by ``repe-unlearn toy world``."""
    from ..data import read_mcq, read_texts

    root = Path(world)
    if not root.is_dir():
        raise DataError(f"--world {world}: not a directory (write one with `repe-unlearn toy world --out DIR`)")
    missing = [name for name in WORLD_FILES if not (root / name).is_file()]
    if missing:
        raise DataError(
            f"--world {world} lacks {', '.join(missing)}: write the world again with this version's "
            "`repe-unlearn toy world`"
        )
    prose = read_texts(root / "forget.jsonl") + read_texts(root / "retain.jsonl")
    forget_every, retain_every = (
        read_mcq(root / "forget_letter_stem.jsonl"),
        read_mcq(root / "retain_letter_stem.jsonl"),
    )
    every = forget_every + retain_every
    forget_unseen = read_mcq(root / "forget_letter_stem_unseen.jsonl")
    retain_unseen = read_mcq(root / "retain_letter_stem_unseen.jsonl")
    if any(item.entity is None for item in every + forget_unseen + retain_unseen):
        raise DataError(f"--world {world}: a letter question names no entity; the split needs them")
    for label, part, whole in (("forget", forget_unseen, forget_every), ("retain", retain_unseen, retain_every)):
        known = set(whole)
        stranger = next((item for item in part if item not in known), None)
        if stranger is not None:
            raise DataError(
                f"--world {world}: {label}_letter_stem_unseen.jsonl asks {stranger.question!r}, which is not one of "
                f"{label}_letter_stem.jsonl's questions: the unseen split must come from this world"
            )
    unseen = {item.entity for item in forget_unseen + retain_unseen}
    trained = [item for item in every if item.entity not in unseen]
    if not trained:
        raise DataError(f"--world {world}: every entity's questions are unseen; none are left to train on")
    if not forget_unseen and not retain_unseen:
        raise DataError(f"--world {world}: no unseen entities' questions to measure the letters on")
    return WorldLetters(
        prose,
        trained,
        forget_unseen,
        retain_unseen,
        read_mcq(root / "forget_cloze.jsonl"),
        read_mcq(root / "retain_cloze.jsonl"),
    )


LETTER_WEIGHTS = "letters.safetensors"


def letter_tensors(model: Any) -> dict[str, Tensor]:
    """What `train_letters` trained in ``model``: the new layers, the final norm and the unembedding."""
    record = getattr(model.config, "repe_unlearn_letters", None)
    if not isinstance(record, dict):
        raise ArchitectureError(f"{type(model).__name__} has no letter layers (its config records none)")
    path = find_layers_path(model)
    depth = int(record["frozen_layers"])
    norm = next(name for name, module in model.named_modules() if module is final_norm(model))
    head = next(name for name, module in model.named_modules() if module is model.get_output_embeddings())
    new = tuple(f"{path}.{i}." for i in range(depth, len(decoder_layers(model))))
    return {
        key: value.detach().contiguous()
        for key, value in model.state_dict().items()
        if key.startswith((*new, norm + ".", head + "."))
    }


def save_letters(model: Any, directory: str | os.PathLike[str]) -> Path:
    """Write ``model``'s letter layers alone (`letter_tensors`, with the recipe in the metadata) to
    ``directory/letters.safetensors``: a few MB that `attach_letters` puts back on the base model."""
    from safetensors.torch import save_file

    target = Path(directory) / LETTER_WEIGHTS
    record = json.dumps(model.config.repe_unlearn_letters)
    save_file(letter_tensors(model), str(target), metadata={"repe_unlearn_letters": record})
    return target


def attach_letters(base: Any, directory: str | os.PathLike[str]) -> Any:
    """The letter model `save_letters` wrote for ``base``: its letter layers stacked on a copy of ``base``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    source = Path(directory) / LETTER_WEIGHTS
    if not source.is_file():
        raise DataError(f"{directory} holds no {LETTER_WEIGHTS}")
    with safe_open(str(source), framework="pt") as handle:
        record = json.loads((handle.metadata() or {}).get("repe_unlearn_letters", "null") or "null")
    if not isinstance(record, dict) or "frozen_layers" not in record:
        raise DataError(f"{source} does not record the letter recipe it was trained with")
    if record["frozen_layers"] != len(decoder_layers(base)):
        raise ArchitectureError(
            f"{source} was trained on a model of {record['frozen_layers']} layers; this one has "
            f"{len(decoder_layers(base))}"
        )
    fields = {name: record[name] for name in ("layers", "mlp") if name in record}
    model, _ = stack_layers(base, LetterConfig(**fields, guide=0.0))
    model.config.repe_unlearn_letters = record
    tensors = load_file(str(source))
    expected = letter_tensors(model)
    wrong = sorted(set(tensors) ^ set(expected)) + [
        k for k in tensors if k in expected and tensors[k].shape != expected[k].shape
    ]
    if wrong:
        raise ArchitectureError(f"{source} does not fit this model: {', '.join(wrong[:4])}")
    model.load_state_dict(tensors, strict=False)
    for parameter in model.parameters():  # as from_pretrained leaves them
        parameter.requires_grad_(True)
    return model.eval()


__all__ = [
    "Landmarks",
    "LetterConfig",
    "LetterRun",
    "WorldLetters",
    "attach_letters",
    "check_model",
    "landmarks",
    "letter_tensors",
    "save_letters",
    "stack_layers",
    "train_letters",
    "world_letters",
]
