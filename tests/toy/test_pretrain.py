import dataclasses
import importlib
import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

import repe_unlearn as ru
from repe_unlearn.cli import main
from repe_unlearn.evaluation import MCQItem, evaluate_mcq, read_mcq
from repe_unlearn.toy import SHIPPED_MODEL, SHIPPED_WORLD, PretrainConfig, load_shipped_model, pretrain

pretraining = importlib.import_module("repe_unlearn.toy.pretrain")  # the module: the package exports the function
TINY = PretrainConfig(d_model=32, n_layers=2, n_heads=2, d_mlp=64, vocab_size=300, steps=40, batch_size=16)


def test_pretraining_lowers_the_loss_and_round_trips() -> None:
    texts = ["Zorb is a town. Zorb lies on the river Vell.", "Quix is a town. Quix lies on the river Ash."] * 4
    model, tokenizer, losses = pretrain(texts, TINY, progress=False)
    assert losses[-1] < 0.5 * losses[0]
    assert ru.decoder_layers(model)[0].mlp.down_proj.weight.shape == (32, 64)
    assert tokenizer("Zorb", add_special_tokens=False)["input_ids"]  # encodes without special tokens


def test_bad_pretrain_config() -> None:
    with pytest.raises(ru.ConfigError, match="not divisible"):
        PretrainConfig(d_model=30, n_heads=4)
    with pytest.raises(ru.DataError, match="no text"):
        pretrain(["  "], TINY, progress=False)


def test_the_shipped_model_knows_its_world() -> None:
    model, tokenizer = load_shipped_model()
    assert (SHIPPED_MODEL / "model.safetensors").stat().st_size < 8_000_000
    for name in ("forget_cloze", "retain_cloze"):
        items = read_mcq(SHIPPED_WORLD / f"{name}.jsonl")
        assert evaluate_mcq(model, tokenizer, items, format="cloze", batch_size=64).accuracy >= 0.9


def test_toy_cli_world_then_pretrain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["toy", "world", "--out", str(tmp_path / "w"), "--seed", "5", "--entities", "8"]) == 0
    flags = [
        "--d-model",
        "32",
        "--n-layers",
        "2",
        "--n-heads",
        "2",
        "--d-mlp",
        "64",
        "--vocab-size",
        "300",
        "--steps",
        "5",
        "--batch-size",
        "8",
    ]
    assert (
        main(
            [
                "toy",
                "pretrain",
                "--corpus",
                str(tmp_path / "w" / "forget.jsonl"),
                "--corpus",
                str(tmp_path / "w" / "retain.jsonl"),
                "--eval-mcq",
                str(tmp_path / "w" / "forget_cloze.jsonl"),
                "--out",
                str(tmp_path / "m"),
                *flags,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "forget_cloze" in out and "cloze accuracy" in out
    assert "parameters (2 layers, d_model 32, adamw) on " in out  # the size and optimizer asked for, said back
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    ids = tokenizer("the town", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape[-1] == len(tokenizer) and torch.isfinite(model(ids).logits).all()
    assert main(["toy", "world", "--out", str(tmp_path / "w")]) == 2  # not empty: refused


SMALL = dict(d_model=64, n_layers=2, n_heads=2, d_mlp=128, vocab_size=400, batch_size=8, eval_every=10)


def small_world(tmp_path: Path) -> tuple[list[str], dict[str, list[object]]]:
    from repe_unlearn.data import read_texts
    from repe_unlearn.toy import World, write_world

    files = write_world(World.generate(3, 4), tmp_path / "small")
    texts = read_texts(files["forget"]) + read_texts(files["retain"])
    return texts, {k: read_mcq(files[f"{k}_cloze"]) for k in ("forget", "retain")}  # type: ignore[misc]


def test_training_stops_once_every_set_reaches_the_target(tmp_path: Path) -> None:
    texts, items = small_world(tmp_path)
    config = PretrainConfig(**SMALL, target=0.9, max_seconds=120.0)  # type: ignore[arg-type]
    model, tokenizer, losses = pretrain(texts, config, eval_items=items, progress=False)  # type: ignore[arg-type]
    run = model.config.repe_unlearn_pretrain
    assert run["stopped"] == "target" and run["steps_run"] == len(losses) and len(losses) % 10 == 0
    for rows in items.values():  # the check was on these very items (fewer than 200): it holds at the end
        assert evaluate_mcq(model, tokenizer, rows, format="cloze").accuracy >= 0.9  # type: ignore[arg-type]
    assert min(run["checked_accuracy"].values()) >= 0.9


def test_a_ceiling_is_reported_never_silent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = tmp_path / "w"
    assert main(["toy", "world", "--out", str(world), "--seed", "1", "--entities", "4"]) == 0
    argv = ["toy", "pretrain", "--corpus", str(world / "forget.jsonl"), "--corpus", str(world / "retain.jsonl")]
    argv += ["--eval-mcq", str(world / "forget_cloze.jsonl"), "--eval-letter", str(world / "forget_letter.jsonl")]
    small = ["--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--d-mlp", "64", "--vocab-size", "300"]
    capsys.readouterr()
    assert main([*argv, *small, "--max-steps", "4", "--eval-every", "2", "--out", str(tmp_path / "m")]) == 0
    captured = capsys.readouterr()
    assert "stopped at the ceiling (4 steps" in captured.err and "letter accuracy" in captured.out
    summary = json.loads((tmp_path / "m" / "pretrain.json").read_text())
    assert summary["stopped"] == "ceiling" and summary["steps"] == 4 and "forget_letter" in summary["eval"]
    learned = json.loads((tmp_path / "m" / "config.json").read_text())["vocab_size"]
    assert summary["vocabulary"] == learned <= summary["config"]["vocab_size"] == 300  # what the model has


def test_every_stop_short_of_the_facts_is_said_in_its_own_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fixed --steps run that ends below the target, and a ceiling with or without questions to check, each
    get a warning that fits them (a run without questions has no accuracy to speak of)."""
    world = tmp_path / "w"
    assert main(["toy", "world", "--out", str(world), "--seed", "1", "--entities", "4"]) == 0
    corpora = ["--corpus", str(world / "forget.jsonl"), "--corpus", str(world / "retain.jsonl")]
    questions = ["--eval-mcq", str(world / "forget_cloze.jsonl")]
    small = ["--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--d-mlp", "64", "--vocab-size", "300"]
    runs = {
        "steps": [*questions, "--steps", "2"],
        "ceiling, questions": [*questions, "--max-steps", "2", "--eval-every", "1"],
        "ceiling, loss": ["--max-steps", "2", "--eval-every", "1"],
    }
    said = {}
    for name, flags in runs.items():
        capsys.readouterr()
        out = tmp_path / name.replace(", ", "-")
        assert main(["toy", "pretrain", *corpora, *small, *flags, "--out", str(out)]) == 0
        said[name] = capsys.readouterr().err
        summary = json.loads((out / "pretrain.json").read_text())
        assert summary["warnings"] and summary["warnings"][-1] in said[name]
    reached = json.loads((tmp_path / "steps" / "pretrain.json").read_text())["eval"]["forget_cloze"]["accuracy"]
    assert f"--steps 2 ended at accuracy {reached:.3f}, below --target 0.98" in said["steps"]
    assert "stopped at the ceiling (2 steps" in said["ceiling, questions"]
    assert "below --target 0.98" in said["ceiling, questions"]
    assert "with the loss" in said["ceiling, loss"] and "still falling" in said["ceiling, loss"]
    assert "questions are about" not in said["ceiling, loss"] and "accuracy" not in said["ceiling, loss"]


def test_the_bar_shows_the_whole_sets_score_on_a_check_that_scores_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check glances at a few questions first; when it goes on to score the whole sets (and may stop on
    them), the bar shows that score, not the glance's, so that a run never looks stopped below its target."""
    from repe_unlearn.data import read_texts
    from repe_unlearn.toy import World, write_world

    module = importlib.import_module("repe_unlearn.toy.pretrain")
    shown: list[str] = []

    class Bar(module.tqdm):  # type: ignore[misc,name-defined]
        def set_postfix(self, *args: Any, **kwargs: Any) -> None:
            if "acc" in kwargs:
                shown.append(kwargs["acc"])
            super().set_postfix(*args, **kwargs)

    monkeypatch.setattr(module, "tqdm", Bar)
    files = write_world(World.generate(5, 16), tmp_path / "w")  # 64 questions a set: more than a glance
    texts = read_texts(files["forget"]) + read_texts(files["retain"])
    items = {k: read_mcq(files[f"{k}_cloze"]) for k in ("forget", "retain")}
    config = PretrainConfig(**{**SMALL, "eval_every": 2}, target=0.01, max_steps=4)  # type: ignore[arg-type]
    model, _, _ = module.pretrain(texts, config, eval_items=items, progress=False)
    run = model.config.repe_unlearn_pretrain
    assert run["stopped"] == "target" and run["steps_run"] == 2  # the first glance was within reach: scored
    assert shown == [f"{min(run['checked_accuracy'].values()):.3f}"]


def test_a_target_met_on_the_checked_sample_only_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop is decided on up to 200 questions per file; when the whole file, printed next to "stopped:
    target", scores lower, the summary says so instead of looking like a contradiction."""
    import repe_unlearn.toy as toy

    real = toy.pretrain

    def stopped_on_a_sample(*args: Any, **kwargs: Any) -> Any:
        model, tokenizer, losses = real(*args, **kwargs)  # 2 steps: the whole file is far below the target
        run = model.config.repe_unlearn_pretrain
        run["stopped"], run["checked_accuracy"] = "target", {"forget_cloze": 0.99}  # as if a sample had said so
        return model, tokenizer, losses

    monkeypatch.setattr(toy, "pretrain", stopped_on_a_sample)
    world = tmp_path / "w"
    assert main(["toy", "world", "--out", str(world), "--seed", "1", "--entities", "4"]) == 0
    argv = ["toy", "pretrain", "--corpus", str(world / "forget.jsonl"), "--eval-mcq", str(world / "forget_cloze.jsonl")]
    small = ["--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--d-mlp", "64", "--vocab-size", "300"]
    capsys.readouterr()
    assert main([*argv, *small, "--steps", "2", "--out", str(tmp_path / "m")]) == 0
    err = capsys.readouterr().err
    assert "reached on the questions checked during training (up to 200 of each --eval-mcq file; lowest 0.990)" in err
    summary = json.loads((tmp_path / "m" / "pretrain.json").read_text())
    assert summary["eval"]["forget_cloze"]["accuracy"] < 0.98 and summary["checked_accuracy"] == {"forget_cloze": 0.99}
    assert summary["checked_questions"] == {"forget_cloze": 16} and "not on the whole files" in summary["warnings"][-1]


def test_without_questions_training_stops_when_the_loss_stops_falling() -> None:
    config = PretrainConfig(**SMALL, warmup=2, max_steps=2000)  # type: ignore[arg-type]
    model, _, losses = pretrain(["Zorb is a town. Zorb lies on the river Vell."] * 4, config, progress=False)
    run = model.config.repe_unlearn_pretrain
    assert run["stopped"] == "plateau" and len(losses) < 2000 and losses[-1] < 0.5 * losses[0]
    assert run["warnings"] == []


def test_the_seconds_ceiling_is_checked_every_step_not_only_at_checks(tmp_path: Path) -> None:
    texts, items = small_world(tmp_path)
    for eval_items in (items, None):  # with questions to check, and on the loss alone
        config = PretrainConfig(**{**SMALL, "eval_every": 1000}, max_seconds=1e-9)  # type: ignore[arg-type]
        model, _, losses = pretrain(texts, config, eval_items=eval_items, progress=False)  # type: ignore[arg-type]
        assert len(losses) == 1 and model.config.repe_unlearn_pretrain["stopped"] == "ceiling"


def test_the_rate_holds_its_peak_until_near_the_target_then_decays_and_holds_low() -> None:
    from repe_unlearn.toy.schedule import FLOOR, PATIENCE, SETTLE, Schedule

    schedule = Schedule(PretrainConfig(warmup=10, decay_fraction=0.5))
    assert schedule.factor(0) == pytest.approx(0.1) and schedule.factor(9) == 1.0 and schedule.factor(500) == 1.0
    for step in (0, 4, 8):  # checks during the warm-up do not count, whatever they say
        schedule.observe(step, gained=False, near=True)
    assert schedule.phase == "stable" and schedule.checks == 0
    for check in range(SETTLE - 1):  # near the target, but a stable phase first settles for SETTLE checks
        schedule.observe(99 + 25 * check, gained=True, near=True)
    assert schedule.phase == "stable" and not schedule.phase_ends(200)
    schedule.observe(199, gained=True, near=True)
    assert schedule.phase == "decay" and schedule.length == 100  # half the 200 steps run so far
    assert schedule.factor(200) == 1.0 and schedule.factor(250) == pytest.approx(0.55)
    assert schedule.factor(300) == pytest.approx(FLOOR) and schedule.factor(400) == pytest.approx(FLOOR)
    assert not schedule.phase_ends(298) and schedule.phase_ends(299)
    assert not schedule.round_ends(near=True) and schedule.round_ends(near=False)
    schedule.phase_ended(299, near=True)  # short of the target but near: the low rate holds as long again
    assert schedule.phase == "hold" and schedule.factor(350) == FLOOR and schedule.phase_ends(399)
    assert schedule.round_ends(near=True)  # a hold ends its round: pretrain compares it with the round before
    schedule.phase_ended(399, near=True)  # after a hold: back to the peak, warming up again
    assert schedule.phase == "stable" and schedule.factor(400) == pytest.approx(0.1) and schedule.factor(409) == 1.0
    for step in range(400, 409):  # no gain in the warm-up: ignored, so no decay starts below the peak
        schedule.observe(step, gained=False, near=False)
    assert schedule.phase == "stable"
    for check in range(PATIENCE):  # far from the target, but no gain for PATIENCE checks: decay
        assert schedule.phase == "stable"
        schedule.observe(424 + 25 * check, gained=False, near=False)
    assert schedule.phase == "decay" and schedule.start == 550 and schedule.length == 275
    assert schedule.factor(550) == 1.0 and max(schedule.factor(s) for s in range(550, 900)) == 1.0
    schedule.phase_ended(824, near=False)  # a decay that ended far from the target: back to the peak
    assert schedule.phase == "stable"
    fixed = Schedule(PretrainConfig(steps=50, warmup=0))  # --steps: one cosine cycle, never a phase change
    assert fixed.factor(0) == 1.0 and fixed.factor(25) == pytest.approx(0.55) and fixed.factor(50) == pytest.approx(0.1)
    fixed.observe(24, gained=False, near=True)
    assert fixed.phase == "stable" and not fixed.phase_ends(49)


def test_a_gain_must_beat_the_best_of_the_phase() -> None:
    from repe_unlearn.toy.schedule import Schedule

    schedule = Schedule(PretrainConfig())
    assert schedule.gained(0.5, by=0.02) and not schedule.gained(0.51, by=0.02) and schedule.gained(0.53, by=0.02)
    assert not schedule.gained(0.54, by=0.02) and schedule.best == 0.53
    schedule.phase_ended(99, near=False)  # a new stable phase starts from no best
    assert schedule.gained(0.2, by=0.02)


def test_what_cannot_be_learned_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts, items = small_world(tmp_path)
    with pytest.raises(ru.ConfigError, match="target is an accuracy"):
        PretrainConfig(target=1.5)
    for bad in (0.0, -1.0, float("nan"), 11.0):
        with pytest.raises(ru.ConfigError, match="decay_fraction must be above 0"):
            PretrainConfig(decay_fraction=bad)
    elsewhere = [MCQItem(f"Q{i}", ("granite", "basalt"), 0) for i in range(4)]
    with pytest.raises(ru.DataError, match="never appear in the corpus"):
        pretrain(texts, TINY, eval_items={"geology": elsewhere}, progress=False)
    with pytest.raises(ru.DataError, match="corpus is empty"):
        pretrain([], TINY, progress=False)
    # a wrong answer key: each question asked about the next entity, with the answer about the first (a value the
    # corpus states, of another entity): the corpus-wide check sees nothing wrong
    rows = items["forget"]
    names = [row.entity for row in rows]  # type: ignore[attr-defined]
    key = [
        MCQItem(row.question.replace(name, other), row.choices, row.answer, other)  # type: ignore[attr-defined]
        for row, name, other in zip(rows, names, names[4:] + names[:4], strict=True)  # 4 relations per entity
    ]
    assert not pretraining.answers_missing(texts, key)
    with pytest.raises(ru.DataError, match=r"right answers never appear in a document that names their entity \(first"):
        pretrain(texts, TINY, eval_items={"forget": key}, progress=False)
    assert pretraining.answers_unstated(texts, items["forget"]) == []  # the true key is stated: none flagged
    one_off = [key[0], *items["forget"][1:]]
    assert pretraining.answers_unstated(texts, one_off) == [key[0]]
    model, _, _ = pretrain(["Zorb is a town."], PretrainConfig(**SMALL, steps=2), progress=False)  # type: ignore[arg-type]
    assert "one document" in capsys.readouterr().err and model.config.repe_unlearn_pretrain["warnings"]
    noise = [" ".join(f"w{i}x{j}" for j in range(30)) for i in range(5)]
    pretrain(noise, PretrainConfig(**SMALL, steps=2), progress=False)  # type: ignore[arg-type]
    assert "little repeated structure" in capsys.readouterr().err
    marked = ["Zorb is a town.", "Quix is a town.</s> Vell is a river.", "Ash is a river."]
    pretrain(marked * 2, PretrainConfig(**SMALL, steps=1), progress=False)  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "2 document(s) contain the text '</s>' (first: document 2)" in err and "'<pad>'" not in err


def count_questions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of questions of every evaluation pretraining makes from now on (evaluation still runs)."""
    from repe_unlearn import evaluation

    sizes: list[int] = []

    def counted(model: object, tokenizer: object, rows: list[object], **kwargs: object) -> object:
        sizes.append(len(rows))
        return evaluate_mcq(model, tokenizer, rows, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(evaluation, "evaluate_mcq", counted)
    return sizes


def test_checks_glance_first_and_the_summary_scores_the_returned_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from repe_unlearn.data import read_texts
    from repe_unlearn.toy import World, write_world
    from repe_unlearn.toy.pretrain import QUICK_CHECK

    files = write_world(World.generate(5, 16), tmp_path / "w")  # 64 questions a set: more than a glance
    texts = read_texts(files["forget"]) + read_texts(files["retain"])
    items = {k: read_mcq(files[f"{k}_cloze"]) for k in ("forget", "retain")}
    sizes = count_questions(monkeypatch)
    real = evaluate_mcq
    config = PretrainConfig(**{**SMALL, "eval_every": 5}, max_steps=7)  # type: ignore[arg-type]
    model, tokenizer, _ = pretrain(texts, config, eval_items=items, progress=False)  # type: ignore[arg-type]
    # step 5: an untrained model glances far below the target and skips the whole sets; after step 7 the
    # summary scores the model returned on the whole sets
    assert sizes == [QUICK_CHECK, QUICK_CHECK, 64, 64]
    run = model.config.repe_unlearn_pretrain
    assert run["stopped"] == "ceiling"
    for name, rows in items.items():
        assert run["checked_accuracy"][name] == real(model, tokenizer, rows, format="cloze").accuracy


def test_sets_no_larger_than_a_glance_are_scored_once_per_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from repe_unlearn.toy.pretrain import QUICK_CHECK

    texts, items = small_world(tmp_path)  # 16 questions a set
    assert all(len(rows) <= QUICK_CHECK for rows in items.values())
    sizes = count_questions(monkeypatch)
    config = PretrainConfig(**{**SMALL, "eval_every": 5}, max_steps=10)  # type: ignore[arg-type]
    pretrain(texts, config, eval_items=items, progress=False)  # type: ignore[arg-type]
    assert sizes == [16, 16, 16, 16]  # steps 5 and 10, each set once; the last check is of the model returned


def test_a_target_reached_after_the_last_check_is_not_called_a_ceiling(tmp_path: Path) -> None:
    texts, items = small_world(tmp_path)
    config = PretrainConfig(**SMALL, target=0.01, max_steps=3)  # type: ignore[arg-type]  # no check before step 10
    model, _, _ = pretrain(texts, config, eval_items=items, progress=False)  # type: ignore[arg-type]
    run = model.config.repe_unlearn_pretrain
    assert run["steps_run"] == 3 and run["stopped"] == "target" and min(run["checked_accuracy"].values()) >= 0.01


def test_answered_questions_are_trained_on_their_answer_only() -> None:
    from repe_unlearn.toy.pretrain import _labels, _loss, answer_start, train_tokenizer

    question = "Which toxin does Zorb make?\nA. brimase\nB. morvane\nAnswer: B</s>"
    assert question[answer_start(question) :] == " B</s>"
    for text in ("Zorb is a town. Answer: B", "two lines\nno answer", "Answer: B\nthen more"):
        assert answer_start(text) is None
    texts = [question, "Zorb is a town. Zorb lies on the river Vell.</s>"]
    tokenizer = train_tokenizer(texts * 4, 300)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    text_labels, answer_labels = _labels(tokenizer, texts, batch)
    assert (text_labels[0] == -100).all()  # the question's prompt and choices are context, not targets
    assert tokenizer.decode(answer_labels[0][answer_labels[0] != -100]) == " B</s>"
    plain = batch["input_ids"][1].masked_fill(batch["attention_mask"][1] == 0, -100)
    assert torch.equal(text_labels[1], plain) and (answer_labels[1] == -100).all()
    # each set's mean loss, summed: the one answer token weighs as much as all the prose tokens together
    logits = torch.randn(*batch["input_ids"].shape, len(tokenizer))
    flat = logits[:, :-1].reshape(-1, logits.shape[-1])

    def mean(labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(flat, labels[:, 1:].reshape(-1), ignore_index=-100)

    assert torch.allclose(_loss(logits, [text_labels, answer_labels]), mean(text_labels) + mean(answer_labels))
    assert torch.allclose(_loss(logits, [text_labels, torch.full_like(text_labels, -100)]), mean(text_labels))


def test_prose_alone_is_trained_on_transformers_own_loss() -> None:
    from repe_unlearn.toy.pretrain import _labels, _loss

    texts = ["Zorb is a town. Zorb lies on the river Vell.</s>", "Quix is a town.</s>"]
    model, tokenizer, _ = pretrain(texts * 4, dataclasses.replace(TINY, steps=1), progress=False)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    reference = model(**batch, labels=labels).loss
    assert torch.allclose(_loss(model(**batch).logits, _labels(tokenizer, texts, batch)), reference)


def test_the_initial_weights_have_the_asked_spread() -> None:
    for std in (None, 0.02, 0.1):  # None: the default, 0.05 (fewer steps than transformers' 0.02 on every world)
        config = dataclasses.replace(TINY, steps=1, lr=1e-9, **({} if std is None else {"init_std": std}))
        model, _, _ = pretrain(["Zorb is a town."] * 4, config, progress=False)
        std = std or 0.05
        weight = ru.decoder_layers(model)[0].mlp.down_proj.weight.detach()
        assert float(weight.std()) == pytest.approx(std, rel=0.1)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ru.ConfigError, match="init_std"):
            PretrainConfig(init_std=bad)


def test_weight_decay_reaches_the_optimizer(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, object]] = []
    real = torch.optim.AdamW

    def recording(params: object, **kwargs: object) -> torch.optim.Optimizer:
        made.append(kwargs)
        return real(params, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.optim, "AdamW", recording)
    pretrain(["Zorb is a town."] * 4, dataclasses.replace(TINY, steps=1, weight_decay=0.25), progress=False)
    assert made and made[0]["weight_decay"] == 0.25
    for bad in (-1.0, float("nan"), 1000.0):  # 1000 x the default lr would zero the weights at every step
        with pytest.raises(ru.ConfigError, match="weight_decay"):
            PretrainConfig(weight_decay=bad)


def test_training_finds_the_answer_of_a_question_whatever_ends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module("repe_unlearn.toy.pretrain")  # the module: the package exports the function

    answers: list[int] = []
    real = module._labels

    def counting(tokenizer: object, texts: list[str], batch: dict[str, torch.Tensor]) -> object:
        found = real(tokenizer, texts, batch)  # type: ignore[arg-type]
        answers.append(int((found[1] != -100).sum()))
        return found

    monkeypatch.setattr(module, "_labels", counting)
    question = "Which toxin does Zorb make?\nA. brimase\nB. morvane\nAnswer: B"
    trained = []
    for ending in ("", "\n", "  \r\n", "\t \n\n"):
        answers.clear()
        config = dataclasses.replace(TINY, steps=1, batch_size=1, shuffle_sentences=False)
        pretrain([question + ending], config, progress=False)
        trained.append(answers[0])
    # " B" and the end-of-text token, never the whole question, nor the blanks after the answer
    assert trained[0] >= 2 and trained == [trained[0]] * 4


def test_a_question_whose_answer_would_be_cut_is_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    long = "Zorb is a town. " * 40 + "\nWhich river does Zorb lie on?\nA. Vell\nB. Ash\nAnswer: A"
    short = "Which river does Quix lie on?\nA. Vell\nB. Ash\nAnswer: B"
    config = dataclasses.replace(TINY, steps=4, batch_size=1, max_length=32)
    model, _, losses = pretrain([long, short, long], config, progress=False)  # a batch of `long` alone crashed
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    assert "2 answered question(s) have their answer start beyond --max-length 32" in capsys.readouterr().err
    summary = model.config.repe_unlearn_pretrain
    assert summary["documents"] == 1 and any("--max-length 32" in w for w in summary["warnings"])
    with pytest.raises(ru.DataError, match="every document is an answered question"):
        pretrain([long], config, progress=False)
    # lr is checked before the product with weight decay, so the message names the culprit
    with pytest.raises(ru.ConfigError, match="lr must be a positive number"):
        PretrainConfig(lr=float("inf"), weight_decay=1.0)


def test_micro_batches_keep_long_and_short_documents_apart_only_when_padding_costs_more_than_a_pass() -> None:
    split = pretraining.micro_batches
    assert split([30, 32, 31, 29]) == [[3, 0, 2, 1]]  # like lengths: one pass, rows sorted by length
    assert split([200, 10, 190, 12], pass_cost=150) == [[1, 3], [2, 0]]  # 2 x 190 padded tokens > one pass
    assert split([200, 10, 190, 12], pass_cost=1000) == [[1, 3, 2, 0]]
    assert split([5, 50, 500], pass_cost=0) == [[0], [1], [2]]
    assert sorted(row for group in split([7, 90, 3, 41, 200, 15]) for row in group) == list(range(6))
    # the cheapest split of all: against every split of the sorted rows into runs, on small random batches
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.choice([rng.randint(1, 20), rng.randint(1, 300)]) for _ in range(rng.randint(1, 8))]
        pass_cost = rng.choice([0, 10, 150, 1000])
        ranked = sorted(lengths)

        def cost(runs: list[list[int]], pass_cost: int = pass_cost) -> int:
            return sum(len(run) * max(run) + pass_cost for run in runs)

        cheapest = min(
            cost([ranked[a:b] for a, b in itertools.pairwise((0, *cuts, len(ranked)))])
            for k in range(len(ranked))
            for cuts in itertools.combinations(range(1, len(ranked)), k)
        )
        found = split(lengths, pass_cost)
        assert sorted(row for group in found for row in group) == list(range(len(lengths)))
        assert cost([[lengths[row] for row in group] for group in found]) == cheapest


def test_a_step_run_in_micro_batches_trains_as_the_whole_batch_would(monkeypatch: pytest.MonkeyPatch) -> None:
    short = "Zorb is a town."
    long = " ".join(f"Quix{i} lies on the river Vell and trades in copper, tin and salt." for i in range(12))
    question = "Which town trades in salt?\nA. Zorb\nB. Quix3\nAnswer: B"  # an answered question: its own loss
    texts = [short, long, question, short + " Zorb lies on the Ash.", long] * 2
    config = dataclasses.replace(TINY, steps=3, batch_size=10, lr=1e-2)
    groups: list[int] = []
    real = pretraining.micro_batches

    def counting(lengths: list[int], pass_cost: int = pretraining.PASS_COST) -> list[list[int]]:
        groups.append(len(real(lengths, pass_cost)))
        return real(lengths, pass_cost)

    monkeypatch.setattr(pretraining, "micro_batches", counting)
    split_model, _, split_losses = pretrain(texts, config, progress=False)
    assert min(groups) >= 2  # the long documents ran apart from the short ones
    monkeypatch.setattr(pretraining, "micro_batches", lambda lengths, pass_cost=0: [list(range(len(lengths)))])
    whole_model, _, whole_losses = pretrain(texts, config, progress=False)
    assert split_losses == pytest.approx(whole_losses, rel=1e-5)
    for (name, a), b in zip(split_model.named_parameters(), whole_model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name
    assert not torch.allclose(
        split_model.lm_head.weight,
        pretrain(texts, dataclasses.replace(config, steps=1), progress=False)[0].lm_head.weight,
    )


def _one_update(optimizer: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Every weight's change in one step of ``optimizer`` on a fresh TINY model (seed 0) and a fixed batch, and
    the gradients it stepped on."""
    config = dataclasses.replace(TINY, optimizer=optimizer, lr=1e-3)
    tokenizer = pretraining.train_tokenizer(["Zorb is a town. Quix lies on the river Ash."] * 8, config.vocab_size)
    torch.manual_seed(0)
    model = pretraining.build_model(config, tokenizer)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    batch = tokenizer(["Zorb is a town.", "Quix lies on the river Ash."], return_tensors="pt", padding=True)
    model(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)).loss.backward()
    pretraining.build_optimizer(config, model).step()
    grads = {name: p.grad.detach() for name, p in model.named_parameters() if p.grad is not None}
    return {name: p.detach() - before[name] for name, p in model.named_parameters()}, grads


def test_muon_orthogonalises_the_layer_matrices_and_leaves_the_rest_to_adamw() -> None:
    adamw, _ = _one_update("adamw")
    muon, grads = _one_update("muon")
    layer_matrices = [name for name, step in muon.items() if step.ndim == 2 and ".layers." in name]
    assert len(layer_matrices) == 7 * TINY.n_layers  # q, k, v, o, gate, up, down
    for name in muon:
        if name in layer_matrices:
            # Muon's first step is the gradient's orthogonal factor: every direction the gradient has (singular
            # values of at least 1% of its norm; a few tokens' gradient has few) gets a step near 1 (Newton-
            # Schulz's band), scaled to AdamW's RMS by 0.2 x sqrt(the larger side) x lr. AdamW's first step is
            # lr x sign(grad), whose singular values spread far wider: the check can tell the two apart.
            grad = torch.linalg.svdvals(grads[name])
            k = int((grad >= 0.01 * grad.norm()).sum())
            singular = torch.linalg.svdvals(muon[name])[:k] / (1e-3 * 0.2 * max(muon[name].shape) ** 0.5)
            assert k >= 4 and float(singular.min()) > 0.5 and float(singular.max()) < 1.3, (name, k, singular)
            spread = torch.linalg.svdvals(adamw[name])[:k]
            assert float(spread.max() / spread.min()) > 2, (name, spread)
        else:  # embeddings and norms: AdamW, element by element, so the same step either way
            assert torch.equal(muon[name], adamw[name]), name
    texts = ["Zorb is a town. Zorb lies on the river Vell.", "Quix is a town. Quix lies on the river Ash."] * 4
    trained, _, losses = pretrain(texts, dataclasses.replace(TINY, optimizer="muon"), progress=False)
    assert losses[-1] < 0.5 * losses[0]
    assert trained.config.repe_unlearn_pretrain["optimizer"] == "muon"


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon is in torch 2.9 and later")
def test_our_muon_steps_as_torchs_does_up_to_its_bfloat16() -> None:
    from repe_unlearn.toy.muon import Muon

    torch.manual_seed(0)
    start = [torch.randn(48, 16), torch.randn(16, 16), torch.randn(16, 40)]  # tall, square, wide
    grads = [[torch.randn_like(w) for w in start] for _ in range(3)]

    def moved(make: Any) -> list[torch.Tensor]:
        """Each weight's change after three steps (the momentum and the decay carry over) on ``grads``."""
        params = [w.clone().requires_grad_() for w in start]
        optimizer = make(params)
        for step in grads:
            for p, g in zip(params, step, strict=True):
                p.grad = g.clone()
            optimizer.step()
        return [p.detach() - w for p, w in zip(params, start, strict=True)]

    theirs = moved(lambda ps: torch.optim.Muon(ps, lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw"))
    ours = moved(lambda ps: Muon(ps, lr=0.01, weight_decay=0.1))
    no_momentum = moved(lambda ps: Muon(ps, lr=0.01, weight_decay=0.1, momentum=0.0))
    for mine, torchs, other in zip(ours, theirs, no_momentum, strict=True):
        # torch orthogonalises in bfloat16 (8 bits of mantissa): the same steps within a few percent, while
        # leaving the momentum out moves the weights elsewhere (the comparison can tell)
        assert float((mine - torchs).norm() / torchs.norm()) < 0.03
        assert float((other - torchs).norm() / torchs.norm()) > 0.1


def test_the_optimizer_is_chosen_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"text": "Zorb is a town."}) + "\n")
    argv = ["toy", "pretrain", "--corpus", str(corpus), "--out", str(tmp_path / "m"), "--optimizer", "sgd"]
    assert main(argv) == 2
    assert "invalid choice: 'sgd'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_run_that_diverges_without_nan_is_refused_not_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = ["Zorb is a town. Zorb lies on the river Vell.", "Quix is a town. Quix lies on the river Ash."] * 4
    with pytest.raises(ru.TrainingError, match="diverged"):
        pretrain(texts, dataclasses.replace(TINY, steps=100, lr=10.0), progress=False)
    _, _, losses = pretrain(texts, dataclasses.replace(TINY, steps=100), progress=False)  # not a hair trigger
    assert losses[-1] < losses[0]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    small = ["--d-model", "32", "--n-layers", "2", "--n-heads", "2", "--d-mlp", "64", "--vocab-size", "300"]
    argv = [
        "toy",
        "pretrain",
        "--corpus",
        str(corpus),
        *small,
        "--steps",
        "100",
        "--lr",
        "10",
        "--out",
        str(tmp_path / "m"),
    ]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()
