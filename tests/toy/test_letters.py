"""`toy letters`: new layers stacked on a frozen toy model, trained to answer its facts as letter questions."""

import json
from pathlib import Path

import pytest
import torch
import transformers as tf
from conftest import ARCHS, VOCAB, make_model
from safetensors.torch import load_file

import repe_unlearn as ru
from repe_unlearn.cli import main
from repe_unlearn.data import MCQItem, letter_prompt, read_mcq
from repe_unlearn.evaluation import evaluate_mcq
from repe_unlearn.toy import (
    SHIPPED_LETTERS,
    SHIPPED_MODEL,
    SHIPPED_WORLD,
    LetterConfig,
    PretrainConfig,
    World,
    load_shipped_model,
    pretrain,
    train_letters,
    world_letters,
    write_world,
)
from repe_unlearn.toy.letters import attach_letters, landmarks, letter_tensors, save_letters, stack_layers

QUICK = LetterConfig(steps=60, batch_size=8, prose=4, eval_every=30, lr=1e-2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small world and a 2-layer model pretrained on its prose (saved, as `toy pretrain` saves it)."""
    root = tmp_path_factory.mktemp("letters")
    write_world(World.generate(5, 8), root / "world")
    sets = world_letters(root / "world")
    config = PretrainConfig(d_model=64, n_layers=2, n_heads=4, d_mlp=128, vocab_size=400, steps=20, batch_size=8)
    model, tokenizer, _ = pretrain(sets.prose, config, progress=False)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root / "world", root / "model"


@pytest.mark.parametrize("arch", ARCHS)
def test_stacked_model_starts_as_the_base_exactly(arch: str) -> None:
    base = make_model(arch)
    stacked, trained = stack_layers(base, LetterConfig(layers=2))
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    assert len(ru.decoder_layers(stacked)) == len(ru.decoder_layers(base)) + 2
    assert torch.equal(stacked(ids).logits, base(ids).logits)
    names = {id(p): n for n, p in stacked.named_parameters()}
    assert all(".embed" not in names[id(p)] and "wte" not in names[id(p)] for p in trained)  # inputs stay
    # the unembedding is trained as an untied copy: the input embedding it was tied to does not move
    assert stacked.get_output_embeddings().weight.data_ptr() != stacked.get_input_embeddings().weight.data_ptr()


def test_landmarks_name_the_letters_and_the_choices() -> None:
    tokenizer = tf.AutoTokenizer.from_pretrained(SHIPPED_MODEL)
    item = MCQItem("Pralstoux spreads through", ("silt dust", "marsh vapour", "ember smoke", "A"), 1, "Pralstoux")
    marks = landmarks(tokenizer, item)
    assert marks.ids == tokenizer(letter_prompt(item), add_special_tokens=False)["input_ids"]
    pieces = [tokenizer.decode([token]) for token in marks.ids]
    assert [pieces[i].strip() for i in marks.letters] == ["A", "B", "C", "D"]
    for index, choice in zip(marks.firsts, item.choices, strict=True):
        assert choice.startswith(pieces[index].strip()) and pieces[index].strip()
    assert "through".endswith(pieces[marks.question_end].strip()) and pieces[marks.question_end].strip()


def test_training_moves_only_the_new_layers_and_guides_the_heads(tiny: tuple[Path, Path]) -> None:
    world, path = tiny
    sets = world_letters(world)
    base = tf.AutoModelForCausalLM.from_pretrained(path)
    tokenizer = tf.AutoTokenizer.from_pretrained(path)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    seen: list[tuple[int, dict[str, float]]] = []
    model, run = train_letters(
        base, tokenizer, sets.prose, sets.trained, QUICK, checks={"unseen": sets.forget_unseen}, progress=False,
        report=lambda step, scores: seen.append((step, scores)),
    )  # fmt: skip
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # the base is not touched
    stacked = model.state_dict()
    for key, value in before.items():  # the copy of the base's layers and embeddings: exactly the base's
        if key.startswith("model.layers.") or key.startswith("model.embed_tokens."):
            assert torch.equal(stacked[key], value), key
    assert not torch.equal(stacked["lm_head.weight"], before["lm_head.weight"])  # the untied head did train
    assert [step for step, _ in seen] == [30, 60] and run.steps == 60 and set(seen[-1][1]) == {"unseen"}
    assert run.frozen_layers == 2 and model.config.repe_unlearn_letters["frozen_layers"] == 2

    def guided_mass(model: torch.nn.Module) -> float:
        """Attention of head 0 (first new layer) from each choice's first token to its letter, averaged."""
        model.set_attn_implementation("eager")
        masses = []
        for item in sets.trained[:8]:
            marks = landmarks(tokenizer, item)
            with torch.no_grad():
                attention = model(torch.tensor([marks.ids]), output_attentions=True).attentions[2][0, 0]
            masses += [float(attention[f, k]) for f, k in zip(marks.firsts, marks.letters, strict=True)]
        return sum(masses) / len(masses)

    unguided, _ = train_letters(base, tokenizer, sets.prose, sets.trained, QUICK.__class__(
        **{**QUICK.to_dict(), "guide": 0.0}), progress=False)  # fmt: skip
    assert guided_mass(model) > 0.5 > guided_mass(unguided)


def test_cli_writes_a_plain_model_and_reports_each_set(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world, path = tiny
    out = tmp_path / "letters"
    flags = ["--steps", "6", "--batch-size", "8", "--prose", "4", "--eval-every", "3"]
    assert main(["toy", "letters", "--model", str(path), "--world", str(world), "--out", str(out), *flags]) == 0
    captured = capsys.readouterr()
    for name in ("trained", "forget unseen", "retain unseen", "forget cloze", "retain cloze"):
        assert name in captured.out
    assert "below 0.9" in captured.err  # six steps do not teach the letters, and the tool says so
    summary = json.loads((out / "letters.json").read_text())
    assert summary["steps"] == 6 and summary["frozen_layers"] == 2 and len(summary["checks"]) == 2
    assert summary["checks"][-1]["step"] == 6 and "trained (sample)" in summary["checks"][-1]
    assert set(summary["before"]) == set(summary["after"])  # every set scored on both sides
    assert Path(summary["world"]).is_absolute() and Path(summary["base_model"]).is_absolute()
    assert summary["questions"]["forget unseen"] == len(read_mcq(world / "forget_letter_stem_unseen.jsonl"))
    model = tf.AutoModelForCausalLM.from_pretrained(out)  # a plain model of the base's class, two layers deeper
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 4
    items = read_mcq(world / "retain_letter_stem_unseen.jsonl")
    tokenizer = tf.AutoTokenizer.from_pretrained(out)
    again = evaluate_mcq(model, tokenizer, items, format="letter").accuracy
    assert again == pytest.approx(summary["after"]["retain unseen"])  # what it reported is what `eval` scores
    assert main(["toy", "letters", "--model", str(path), "--world", str(world), "--out", str(out), *flags]) == 2
    # the toy preset counts its layer from the last: on a letter model that is a letter layer, and `unlearn` says so
    corpora = ["--forget", str(world / "forget.jsonl"), "--retain", str(world / "retain_with_letters.jsonl")]
    short = ["--max-batches", "1", "--epochs", "1", "--out", str(tmp_path / "u")]
    capsys.readouterr()
    assert main(["unlearn", "--model", str(out), *corpora, "--preset", "toy", *short]) == 0
    assert "layer 2 is one of the letter layers" in capsys.readouterr().err


def test_bad_inputs_get_one_line_errors(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world, path = tiny
    argv = ["toy", "letters", "--model", str(path), "--out", str(tmp_path / "o")]
    old = tmp_path / "old"  # a world written before the stem files existed
    old.mkdir()
    for name in ("forget.jsonl", "retain.jsonl", "forget_cloze.jsonl", "retain_cloze.jsonl"):
        (old / name).write_bytes((world / name).read_bytes())
    cases = {
        "lacks forget_letter_stem.jsonl": ["--world", str(old)],
        "not a directory": ["--world", str(world / "forget.jsonl")],
        "needs 2 new layers": ["--world", str(world), "--layers", "1"],
        "fresh is a share": ["--world", str(world), "--fresh", "1.5"],
        "the model has 4 per layer": ["--world", str(world), "--match-heads", "5"],
    }
    for message, flags in cases.items():
        capsys.readouterr()
        assert main([*argv, *flags]) == 2, message
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o").exists()
    foreign = tmp_path / "foreign"  # the unseen split of another world
    write_world(World.generate(6, 8), tmp_path / "other")
    foreign.mkdir()
    for name in (world / "world.json").parent.iterdir():
        (foreign / name.name).write_bytes(name.read_bytes())
    unseen = "forget_letter_stem_unseen.jsonl"
    (foreign / unseen).write_bytes((tmp_path / "other" / unseen).read_bytes())
    with pytest.raises(ru.DataError, match="the unseen split must come from this world"):
        world_letters(foreign)
    with pytest.raises(ru.DataError, match="at least 4"):
        train_letters(make_model("llama"), None, ["x"], world_letters(world).trained[:3], QUICK, progress=False)


def test_the_letter_layers_alone_round_trip(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    world, path = tiny
    sets = world_letters(world)
    base = tf.AutoModelForCausalLM.from_pretrained(path)
    tokenizer = tf.AutoTokenizer.from_pretrained(path)
    config = LetterConfig(**{**QUICK.to_dict(), "steps": 3})
    model, _ = train_letters(base, tokenizer, sets.prose, sets.trained, config, progress=False)
    written = save_letters(model, tmp_path)
    assert set(load_file(written)) == set(letter_tensors(model)) and not any(
        key.startswith(("model.layers.0.", "model.layers.1.", "model.embed")) for key in load_file(written)
    )
    again = attach_letters(tf.AutoModelForCausalLM.from_pretrained(path), tmp_path)
    ids = torch.tensor([landmarks(tokenizer, sets.trained[0]).ids])
    assert torch.equal(again(ids).logits, model(ids).logits)
    with pytest.raises(ru.ArchitectureError, match="trained on a model of 2 layers"):
        attach_letters(make_model("llama"), tmp_path)


def test_the_shipped_letter_model_answers_unseen_entities() -> None:
    """The shipped model plus the shipped letter layers: its own first six layers, unchanged, and the letters
    answered at 0.9 or more about the entities whose letter questions were never trained on."""
    model, tokenizer = load_shipped_model(letters=True)
    base, _ = load_shipped_model()
    files = (SHIPPED_MODEL / "model.safetensors", SHIPPED_LETTERS / "letters.safetensors")
    assert sum(file.stat().st_size for file in files) <= 10_000_000
    stacked = model.state_dict()
    kept = [key for key in base.state_dict() if key.startswith(("model.layers.", "model.embed_tokens."))]
    assert len(kept) == 1 + 9 * 6 and all(torch.equal(stacked[key], base.state_dict()[key]) for key in kept)
    for part in ("forget", "retain"):
        letters = read_mcq(SHIPPED_WORLD / f"{part}_letter_stem_unseen.jsonl")
        assert evaluate_mcq(model, tokenizer, letters, format="letter", batch_size=64).accuracy >= 0.9
        cloze = read_mcq(SHIPPED_WORLD / f"{part}_cloze.jsonl")
        assert evaluate_mcq(model, tokenizer, cloze, format="cloze", batch_size=64).accuracy >= 0.95
    # the frozen model alone does not: the letter layers are what answers
    letters = read_mcq(SHIPPED_WORLD / "forget_letter_stem_unseen.jsonl")
    assert evaluate_mcq(base, tokenizer, letters, format="letter", batch_size=64).accuracy <= 0.4
