import collections
import json
from pathlib import Path

import pytest

from repe_unlearn.toy import PATHOGENS, TOWNS, World, write_world


def test_same_seed_same_world_and_other_seeds_differ() -> None:
    assert World.generate(3, 20) == World.generate(3, 20)
    assert World.generate(3, 20) != World.generate(4, 20)


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
