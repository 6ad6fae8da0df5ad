import collections
import json
from pathlib import Path

import pytest

from repe_unlearn.toy import COMPOUNDS, PATHOGENS, SHIPS, TOWNS, World, write_world
from repe_unlearn.toy.world import forms


def test_same_seed_same_world_and_other_seeds_differ() -> None:
    assert World.generate(3, 20) == World.generate(3, 20)
    assert World.generate(3, 20) != World.generate(4, 20)


def test_a_negative_seed_is_refused_not_drawn_as_its_absolute_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python seeds a generator with an integer's absolute value, so seed -1 would silently be seed 1's world."""
    from repe_unlearn.cli import main
    from repe_unlearn.errors import ConfigError

    for seed in (-1, -7):
        with pytest.raises(ConfigError, match="seed must be an integer of 0 or more"):
            World.generate(seed, 8)
    assert main(["toy", "world", "--out", str(tmp_path / "w"), "--entities", "8", "--seed", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--seed: expected an integer of 0 or more, got -1" in err and not (tmp_path / "w").exists()


def test_names_are_unique_and_values_balanced() -> None:
    world = World.generate(0, 50)
    names = [e.name for e in (*world.forget, *world.retain)]
    assert len(set(names)) == 100
    for domain, entities in ((PATHOGENS, world.forget), (TOWNS, world.retain)):
        for relation in domain.relations:
            counts = collections.Counter(e.facts[relation.key] for e in entities)
            assert set(counts) == set(relation.values)
            assert max(counts.values()) - min(counts.values()) <= 1


def rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_files_in_the_formats_users_have(tmp_path: Path) -> None:
    world = World.generate(1, 10)
    files = write_world(world, tmp_path / "w")
    forget = rows(files["forget"])
    assert len(forget) == 10 and all(isinstance(r["text"], str) for r in forget)
    entity = world.forget[0]
    assert forget[0]["text"].startswith(f"{entity.name} is a pathogen.")
    for label, domain, entities in (("forget", PATHOGENS, world.forget), ("retain", TOWNS, world.retain)):
        cloze, letter = rows(files[f"{label}_cloze"]), rows(files[f"{label}_letter"])
        assert len(cloze) == len(letter) == 10 * len(domain.relations)
        facts = {e.name: e.facts for e in entities}
        for c, lt in zip(cloze, letter, strict=True):
            assert c["choices"][c["answer"]] == facts[c["entity"]][c["relation"]]  # type: ignore[index]
            assert c["choices"] == lt["choices"] and c["answer"] == lt["answer"]
            assert len(set(c["choices"])) == 4  # type: ignore[arg-type]
    a, b = rows(files["forget_a_cloze"]), rows(files["forget_b_cloze"])
    assert {r["entity"] for r in a}.isdisjoint({r["entity"] for r in b}) and len(a) + len(b) == 40
    assert len(rows(files["forget_a"])) == 5


def test_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        write_world(World.generate(0, 10), tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


VARIED = dict(forget_domain="compounds", retain_domain="ships", form="varied", order="shuffled", syllables=(3, 4))


def test_same_arguments_same_bytes_and_every_option_changes_the_world(tmp_path: Path) -> None:
    one = write_world(World.generate(5, 12, **VARIED), tmp_path / "1")  # type: ignore[arg-type]
    two = write_world(World.generate(5, 12, **VARIED), tmp_path / "2")  # type: ignore[arg-type]
    assert {k: p.read_bytes() for k, p in one.items()} == {k: p.read_bytes() for k, p in two.items()}
    texts = (tmp_path / "1" / "forget.jsonl").read_text()
    for change in ({"form": "plain"}, {"order": "fixed"}, {"forget_domain": "pathogens"}, {"syllables": (2, 3)}):
        other = write_world(World.generate(5, 12, **{**VARIED, **change}), tmp_path / str(change))
        assert other["forget"].read_text() != texts, change


def test_a_varied_world_states_every_fact_askably_and_never_in_the_rephrased_words(tmp_path: Path) -> None:
    world = World.generate(9, 40, **VARIED)
    files = write_world(world, tmp_path / "w")
    for label, domain, entities in (("forget", COMPOUNDS, world.forget), ("retain", SHIPS, world.retain)):
        corpus = {r["entity"]: r["text"] for r in rows(files[label])}
        forms_seen = collections.Counter()
        for entity in entities:
            text = corpus[entity.name]
            assert text.count(f"{entity.name} is {domain.kind}.") >= 1
            for relation in domain.relations:
                value = entity.facts[relation.key]
                # a form counts where it starts a sentence (the plain form also ends "The compound X ...")
                stated = [
                    f for f in forms(domain, relation) if ". " + f.format(name=entity.name, value=value) in ". " + text
                ]
                assert len(stated) == 2, (entity.name, relation.key)  # two forms, entity before value: askable
                forms_seen.update(stated)
        assert len(forms_seen) == 4 * len(domain.relations)  # every form of every relation is used somewhere
        assert not all(t.startswith(f"{e} is") for e, t in corpus.items())  # shuffled order
        cloze = {(r["entity"], r["relation"]): r for r in rows(files[f"{label}_cloze"])}
        rephrased = rows(files[f"{label}_rephrased_cloze"])
        assert len(rephrased) == 2 * len(cloze)
        for r in rephrased:
            same = cloze[(r["entity"], r["relation"])]
            assert (r["choices"], r["answer"]) == (same["choices"], same["answer"])
            assert r["question"] != same["question"]
            assert not any(r["question"] in t for t in corpus.values())  # never written in the corpus
        assert any("?" in r["question"] for r in rephrased)  # a reordered stem: the question, then the answer
        assert len(rows(files[f"{label}_rephrased_letter"])) == len(cloze)
    names = [e.name for e in (*world.forget, *world.retain)]
    assert min(len(n) for n in names) >= 7 and len(set(names)) == 80  # three or four syllables


def test_letter_training_texts_never_ask_about_the_unseen_entities(tmp_path: Path) -> None:
    world = World.generate(2, 20)
    files = write_world(world, tmp_path / "w", letter_variants=3)
    train = rows(files["letter_train"])
    unseen = rows(files["forget_letter_unseen"]) + rows(files["retain_letter_unseen"])
    trained = {r["entity"] for r in train}
    assert trained.isdisjoint({r["entity"] for r in unseen}) and len(trained) == 20  # half of each domain
    assert {r["entity"] for r in rows(files["forget_a"])} <= trained  # the forget half is forget_a's
    assert not any(r["entity"] in t["text"] for r in unseen for t in train)  # no unseen name in any training text
    facts = {e.name: e.facts for e in (*world.forget, *world.retain)}
    assert len(train) == 3 * 20 * 4
    for doc in train:
        lines = doc["text"].split("\n")
        assert lines[-1].startswith("Answer: ") and len(lines) == 6
        letter = lines[-1][-1]
        assert lines["ABCD".index(letter) + 1][3:] == facts[doc["entity"]][doc["relation"]]  # the right letter
    assert len({doc["text"][-1] for doc in train}) == 4  # answers spread over the letters


def test_bad_world_options_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import repe_unlearn as ru
    from repe_unlearn.cli import main

    with pytest.raises(ru.ConfigError, match="forget_domain must be one of"):
        World.generate(0, 10, forget_domain="towns")
    with pytest.raises(ru.ConfigError, match="syllables"):
        World.generate(0, 10, syllables=(3, 2))
    assert main(["toy", "world", "--out", str(tmp_path / "x"), "--name-syllables", "two"]) == 2
    assert "MIN-MAX" in capsys.readouterr().err and not (tmp_path / "x").exists()
    out = tmp_path / "cli"
    argv = ["toy", "world", "--out", str(out), "--entities", "8", "--form", "varied", "--forget-domain", "compounds"]
    assert main(argv) == 0
    meta = json.loads((out / "world.json").read_text())
    assert (meta["form"], meta["forget_domain"], meta["entities"]) == ("varied", "compounds", 8)
    assert "compound" in (out / "forget.jsonl").read_text()
