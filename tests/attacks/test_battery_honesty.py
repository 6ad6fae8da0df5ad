"""What an outside tester found the battery doing wrong: leaks through multi-entity texts, shares computed
against the wrong floor, prompts that break the base, attacks dropped silently, one output deleting another."""

import json
from pathlib import Path

import pytest
from conftest import make_model

import repe_unlearn as ru
from repe_unlearn.cli import main
from repe_unlearn.data import MCQItem, read_mcq, read_texts
from repe_unlearn.robustness import AttackRow, Battery, battery, held_out_split
from repe_unlearn.toy import SHIPPED_MODEL, SHIPPED_WORLD


def test_every_entity_a_relearning_text_names_is_kept_out_of_the_scores() -> None:
    items = read_mcq(SHIPPED_WORLD / "forget_cloze.jsonl")
    a, b = read_texts(SHIPPED_WORLD / "forget_a.jsonl"), read_texts(SHIPPED_WORLD / "forget_b.jsonl")
    with pytest.raises(ru.ConfigError, match="every forget entity"):  # each text: one a entity, then one b entity
        held_out_split(items, [x + " " + y for x, y in zip(a, b, strict=True)])
    first, second = sorted({i.entity for i in items if i.entity})[:2]
    held_out, trained = held_out_split(items, [f"Both {first} and {second} are pathogens."])
    assert {i.entity for i in trained} == {first, second} and not {first, second} & {i.entity for i in held_out}


def rows(before: float, after: float, **details: object) -> AttackRow:
    return AttackRow("x", before, after, None, 0.0, dict(details))


def test_shares_use_the_right_floor_and_nothing_forgotten_is_said() -> None:
    held = Battery([rows(0.24, 0.31, base_forget=0.31, floor=0.25)], 0.25, ["e"], ["f"], {"forget": 0.3, "retain": 1})
    assert held.recovered(held.rows[0]) is None  # a probe at chance on the base: nothing to recover
    same = Battery([rows(0.29, 0.9)], 0.25, ["e"], ["f"], {"forget": 0.29, "retain": 1}, {"forget": 0.29, "retain": 1})
    assert "too little was forgotten" in same.verdict() and "Hidden" not in same.verdict()
    unforgotten = Battery(
        [rows(1.0, 0.94, base_forget=0.94, floor=0.25)], 0.25, ["e"], ["f"], {"forget": 1.0, "retain": 1},
        {"forget": 1.0, "retain": 1},
    )  # fmt: skip
    assert unforgotten.recovered(unforgotten.rows[0]) is None and "too little was forgotten" in unforgotten.verdict()
    probe = Battery([rows(0.29, 0.88, base_forget=0.9, floor=0.25)], 0.25, ["e"], ["f"], {"forget": 1.0, "retain": 1})
    assert probe.recovered(probe.rows[0]) == pytest.approx((0.88 - 0.25) / (0.9 - 0.25))


def items(names: list[str], relation: str) -> list[MCQItem]:
    return [MCQItem(f"{n} {relation}", ("water", "air", "soil"), i % 3, n) for i, n in enumerate(names)]


def test_named_attacks_run_or_fail_and_few_shot_is_compared_with_the_prompted_base(tokenizer: object) -> None:
    model = make_model("llama")
    common = dict(
        forget_items=items([f"virus {i}" for i in range(1, 9)], "spreads through"),
        retain_items=items(["town 1"], "lies on"), unrelated_texts=["the town 1 lies on a river"],
        relearn_texts=[f"the virus {i} spreads through water" for i in range(1, 6)], progress=False,
    )  # fmt: skip
    for attacks, message in ((["ablate"], "control vector"), (["rephrased"], "rephrased"), ([], "no attack")):
        with pytest.raises(ru.ConfigError, match=message):
            battery(model, tokenizer, attacks=attacks, **common)  # type: ignore[arg-type]
    with pytest.raises(ru.ConfigError, match="named twice"):
        battery(model, tokenizer, attacks=["quantize", "quantize"], **common)  # type: ignore[arg-type]
    result = battery(model, tokenizer, base=make_model("llama", seed=1), attacks=["few-shot"], **common)  # type: ignore[arg-type]
    assert all("base_forget" in row.details for row in result.rows)  # the base asked with the same prompts
    from repe_unlearn import robustness

    with pytest.MonkeyPatch.context() as patch:  # the default list, shortened to stay quick
        patch.setattr(robustness, "ATTACKS", ("quantize", "ablate", "rephrased"))
        defaults = battery(model, tokenizer, attacks=None, **common)  # type: ignore[arg-type]
    assert set(defaults.skipped) == {"ablate", "rephrased"} and "Not run: ablate" in defaults.markdown()
    assert defaults.unlearned is not None


def test_overwrite_replaces_only_the_same_kind_of_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = tmp_path / "world"
    assert main(["toy", "world", "--out", str(world), "--entities", "4"]) == 0
    argv = ["robustness", "--model", str(SHIPPED_MODEL), "--forget-mcq", str(SHIPPED_WORLD / "forget_cloze.jsonl")]
    argv += ["--retain-mcq", str(SHIPPED_WORLD / "retain_cloze.jsonl"), "--relearn-texts"]
    argv += [str(SHIPPED_WORLD / "forget_a.jsonl"), "--unrelated-texts", str(SHIPPED_WORLD / "retain.jsonl")]
    before = sorted(p.name for p in world.iterdir())
    capsys.readouterr()
    assert main([*argv, "--attacks", "quantize", "--out", str(world), "--overwrite"]) == 2
    assert "holds a toy world output, not a robustness output" in capsys.readouterr().err
    assert sorted(p.name for p in world.iterdir()) == before  # nothing deleted
    assert main(["toy", "world", "--out", str(world), "--entities", "5", "--overwrite"]) == 0  # same kind: fine
    assert json.loads((world / "world.json").read_text())["entities"] == 5
    assert main([*argv, "--attacks", "", "--out", str(tmp_path / "r")]) == 2


def test_no_entity_is_named_like_a_template_word_and_letter_variants_are_bounded(tmp_path: Path) -> None:
    from repe_unlearn.toy import World, write_world

    world = World.generate(9, 200, syllables=(1, 1))
    names = {e.name.lower() for e in (*world.forget, *world.retain)}
    assert not names & {"the", "gel", "is", "of", "a"} and len(names) == 400
    with pytest.raises(ru.ConfigError, match="24 orders"):
        write_world(World.generate(0, 4), tmp_path / "w", letter_variants=25)


def test_pretrain_refuses_questions_about_another_world_and_records_the_ceiling(tmp_path: Path) -> None:
    from repe_unlearn.toy import World, write_world

    mine, other = (write_world(World.generate(s, 6), tmp_path / str(s)) for s in (1, 2))
    argv = ["toy", "pretrain", "--corpus", str(mine["forget"]), "--corpus", str(mine["retain"])]
    small = ["--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--d-mlp", "64", "--vocab-size", "300"]
    assert main([*argv, *small, "--eval-mcq", str(other["forget_cloze"]), "--out", str(tmp_path / "x")]) == 2
    assert (
        main([*argv, *small, "--max-steps", "3", "--eval-mcq", str(mine["forget_cloze"]), "--out", str(tmp_path / "m")])
        == 0
    )
    summary = json.loads((tmp_path / "m" / "pretrain.json").read_text())
    assert summary["stopped"] == "ceiling" and any("ceiling" in w for w in summary["warnings"])
