"""Reference mode is the published RMU loop: optimizer, truncation, per-topic lengths, filter, reading, u.

The baseline (``rmu.reference_rmu``) is written from the published code independently of the trainer; the
tests below also show that it can see each difference it is meant to rule out.
"""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import make_model
from torch import nn

from repe_unlearn import rmu
from repe_unlearn.data import read_texts
from repe_unlearn.rmu.optim import LegacyAdamW

GRADS = [[1e-7, -2e-5, 3e-3], [5e-7, 1e-5, -1e-3], [-2e-7, 4e-5, 2e-3], [1e-6, -1e-6, 0.0]]


def legacy_by_hand(start: list[float], lr: float) -> list[list[float]]:
    """transformers' pre-v5 AdamW, element by element in Python floats, straight from its formula."""
    beta1, beta2, eps = 0.9, 0.999, 1e-6
    p, m, v, out = list(start), [0.0] * len(start), [0.0] * len(start), []
    for t, grads in enumerate(GRADS, start=1):
        for i, g in enumerate(grads):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            p[i] -= lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) * m[i] / (math.sqrt(v[i]) + eps)
        out.append(list(p))
    return out


def run(optimizer: type[torch.optim.Optimizer], start: list[float], lr: float, **kwargs: float) -> list[list[float]]:
    param = nn.Parameter(torch.tensor(start, dtype=torch.float64))
    opt = optimizer([param], lr=lr, **kwargs)
    out = []
    for grads in GRADS:
        param.grad = torch.tensor(grads, dtype=torch.float64)
        opt.step()
        out.append(param.detach().tolist())
    return out


def test_legacy_adamw_follows_the_published_formula() -> None:
    start, lr = [0.5, -1.0, 2.0], 5e-5
    expected = legacy_by_hand(start, lr)
    got = run(LegacyAdamW, start, lr)
    for step_expected, step_got in zip(expected, got, strict=True):
        assert step_got == pytest.approx(step_expected, rel=1e-12, abs=1e-15)
    torch_steps = run(torch.optim.AdamW, start, lr, eps=1e-6, weight_decay=0.0)
    first_torch = abs(torch_steps[0][0] - start[0])
    first_legacy = abs(got[0][0] - start[0])
    assert first_torch > 5 * first_legacy  # at |g| = 1e-7 torch's step is many times the legacy one


def reference_config(**overrides: object) -> rmu.RMUConfig:
    base: dict[str, object] = {
        "layer": 2,
        "steering_coeff": (5.0, 3.0),
        "alpha": (10.0, 4.0),
        "lr": 1e-3,
        "batch_size": 3,
        "max_batches": 6,
        "max_length": 20,
        "forget_max_length": (12, 28),
        "min_len": 40,
        "reference_mode": True,
    }
    return rmu.RMUConfig(**{**base, **overrides})


WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "the",
    "mat",
    "a",
    "dog",
    "ran",
    "in",
    "the",
    "park",
    "virus",
    "spreads",
    "through",
    "water",
    "town",
    "has",
    "a",
    "river",
    "bridge",
]


def text(i: int, n_words: int) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n_words))


@pytest.fixture
def corpora(tmp_path: Path) -> dict[str, Path]:
    """A bio-like JSONL corpus (parsed), a cyber-like JSONL corpus (read as raw lines) and a text retain corpus;
    long texts (cut at every length in play), and early on texts of exactly min_len and min_len + 1 characters
    (kept by ``len > min_len`` or not)."""
    bio, cyber, retain = tmp_path / "bio.jsonl", tmp_path / "cyber.jsonl", tmp_path / "retain.txt"
    bio_texts = [text(i, 6 + (i * 5) % 40) for i in range(30)]
    bio_texts[1:1] = ["x" * 40, "y" * 41]
    bio.write_text("".join(json.dumps({"text": t}) + "\n" for t in bio_texts))
    cyber.write_text("".join(json.dumps({"text": text(i + 3, 4 + (i * 7) % 45)}) + "\n" for i in range(30)))
    retain_texts = [text(i + 5, 5 + (i * 3) % 30) for i in range(40)]
    retain_texts[2:2] = ["z" * 39]  # 39 characters and its newline: 40 > min_len 39, not > 40
    retain.write_text("".join(t + "\n" for t in retain_texts))
    return {"bio": bio, "cyber": cyber, "retain": retain}


def left_truncating(tokenizer: object) -> object:
    tok = copy.deepcopy(tokenizer)
    tok.truncation_side = "left"  # type: ignore[attr-defined]
    return tok


def ours(tokenizer: object, corpora: dict[str, Path], config: rmu.RMUConfig) -> tuple[nn.Module, rmu.RMUResult]:
    model = make_model("llama")
    forget = [read_texts(corpora["bio"]), read_texts(corpora["cyber"], raw_lines=True)]
    retain = [read_texts(corpora["retain"], raw_lines=True)] * 2
    result = rmu.unlearn(model, tokenizer, forget, retain, config, progress=False)
    return model, result


def theirs(
    tokenizer: object, corpora: dict[str, Path], config: rmu.RMUConfig, optimizer: str
) -> tuple[nn.Module, list]:
    model = make_model("llama")
    forget = [
        rmu.published_corpus(corpora["bio"], parse_json=True),
        rmu.published_corpus(corpora["cyber"], parse_json=False),
    ]
    retain = [rmu.published_corpus(corpora["retain"], parse_json=False)] * 2
    return model, rmu.reference_rmu(model, tokenizer, forget, retain, config, optimizer=optimizer)


def test_the_texts_are_long_enough_to_be_cut_at_every_length(tokenizer: object, corpora: dict[str, Path]) -> None:
    lengths = {name: max(len(tokenizer(t)["input_ids"]) for t in read_texts(path, raw_lines=name != "bio"))
               for name, path in corpora.items()}  # fmt: skip
    assert lengths["bio"] > 12 and lengths["cyber"] > 28 and lengths["retain"] > 20


def test_reference_mode_equals_the_published_loop(tokenizer: object, corpora: dict[str, Path]) -> None:
    tok = left_truncating(tokenizer)
    config = reference_config()
    model_ours, result = ours(tok, corpora, config)
    assert tok.truncation_side == "left"  # type: ignore[attr-defined]  # the user's tokenizer is given back as it was
    model_theirs, losses = theirs(tok, corpora, config, "adamw-legacy")
    assert len(losses) == len(result.history) == 6
    for (forget_ref, retain_ref, _), log in zip(losses, result.history, strict=True):
        assert log.forget_loss == pytest.approx(forget_ref, rel=1e-6)
        assert log.retain_loss == pytest.approx(retain_ref, rel=1e-6, abs=1e-9)
    assert result.history[-1].retain_loss > 0  # the retain loss is not trivially zero after the first steps
    mine, published = dict(model_ours.named_parameters()), dict(model_theirs.named_parameters())
    for name in result.parameter_names:
        update = (published[name] - result.original[name]).norm()
        assert (mine[name] - published[name]).norm() <= 1e-6 * published[name].norm()
        assert update > 0 and (mine[name] - published[name]).norm() <= 1e-4 * update


def test_the_baseline_sees_each_difference_it_rules_out(tokenizer: object, corpora: dict[str, Path]) -> None:
    config = reference_config()
    _, legacy = theirs(tokenizer, corpora, config, "adamw-legacy")
    _, torch_adamw = theirs(tokenizer, corpora, config, "adamw")
    retain_legacy, retain_torch = [r for _, r, _ in legacy], [r for _, r, _ in torch_adamw]
    assert retain_legacy[0] == retain_torch[0]  # step 0 is before any update
    assert any(abs(a - b) > 1e-3 * abs(b) for a, b in zip(retain_legacy[1:], retain_torch[1:], strict=True))

    # the truncation side, the per-topic lengths and the filter each change the losses too
    _, left = theirs(left_truncating(tokenizer), corpora, config, "adamw-legacy")
    assert [f for f, _, _ in left] == [f for f, _, _ in legacy]  # the baseline forces right truncation
    for variant in (
        reference_config(forget_max_length=(12,)),
        reference_config(min_len=39),
    ):
        _, other = theirs(tokenizer, corpora, variant, "adamw-legacy")
        assert [f for f, _, _ in other] != [f for f, _, _ in legacy]


def test_reference_mode_draws_u_as_published() -> None:
    model = make_model("llama")
    torch.manual_seed(42)
    expected = torch.rand(1, 1, 32, dtype=model.dtype, device=model.device)
    expected = (expected / torch.norm(expected))[0, 0]
    drawn = rmu.published_directions(2, 32, 42, device=model.device, dtype=model.dtype)
    assert torch.equal(drawn[0], expected)
    torch.manual_seed(42)
    torch.rand(1, 1, 32)
    second = torch.rand(1, 1, 32)
    assert torch.equal(drawn[1], (second / torch.norm(second))[0, 0])


def test_published_reading_keeps_raw_lines_and_compares_strictly(tmp_path: Path) -> None:
    path = tmp_path / "cyber.jsonl"
    path.write_text('{"text": "abc"}\n{"text": "abcdefgh"}\n')
    assert read_texts(path, raw_lines=True) == ['{"text": "abc"}\n', '{"text": "abcdefgh"}\n']
    assert rmu.published_corpus(path, parse_json=False) == read_texts(path, raw_lines=True)
    assert rmu.published_corpus(path, parse_json=True, min_len=3) == ["abcdefgh"]  # len > min_len
    config = reference_config(min_len=3, batch_size=4)
    assert rmu.make_batches(["abc", "abcd"], config, name="c") == [["abcd"]]
    assert rmu.make_batches(["abc", "abcd"], reference_config(min_len=3, reference_mode=False), name="c") == [
        ["abc", "abcd"]
    ]


def test_the_zephyr_preset_runs_the_published_recipe() -> None:
    config = rmu.preset("wmdp-zephyr")
    assert config.optimizer_name == "adamw-legacy" and config.reference_mode
    assert config.forget_lengths(2) == [512, 768] and config.forget_lengths(3) == [512, 768, 768]
    assert config.forget_lengths(1) == [512] and config.max_length == 512
    assert rmu.RMUConfig().optimizer_name == "adamw"
    with pytest.raises(rmu.ConfigError if hasattr(rmu, "ConfigError") else ValueError, match="adamw-legacy"):
        rmu.RMUConfig(reference_mode=True, optimizer="adamw")


def test_reference_mode_equals_the_published_loop_in_bf16(tokenizer: object, corpora: dict[str, Path]) -> None:
    """The published Zephyr run is in bf16: the losses are computed as it computes them, in the model's dtype."""
    config = reference_config(max_batches=4)
    forget = [read_texts(corpora["bio"]), read_texts(corpora["cyber"], raw_lines=True)]
    retain = [read_texts(corpora["retain"], raw_lines=True)] * 2
    mine = make_model("llama").to(torch.bfloat16)
    result = rmu.unlearn(mine, tokenizer, forget, retain, config, progress=False)
    published = make_model("llama").to(torch.bfloat16)
    forget_ref = [rmu.published_corpus(corpora["bio"], parse_json=True),
                  rmu.published_corpus(corpora["cyber"], parse_json=False)]  # fmt: skip
    retain_ref = [rmu.published_corpus(corpora["retain"], parse_json=False)] * 2
    losses = rmu.reference_rmu(published, tokenizer, forget_ref, retain_ref, config)
    assert [(log.forget_loss, log.retain_loss) for log in result.history] == [(f, r) for f, r, _ in losses]
    mine_params, their_params = dict(mine.named_parameters()), dict(published.named_parameters())
    for name in result.parameter_names:
        assert torch.equal(mine_params[name], their_params[name])


def test_jsonl_lines_split_as_a_file_iterator_splits_them(tmp_path: Path) -> None:
    path = tmp_path / "bio.jsonl"
    path.write_text(
        json.dumps({"text": "first line\u2028still the first"}, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    assert read_texts(path) == ["first line\u2028still the first"] == rmu.published_corpus(path, parse_json=True)
