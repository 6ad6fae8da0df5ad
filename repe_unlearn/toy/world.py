"""A fictitious world, deterministic by seed: a hazard-like domain to forget and a benign one to keep.

Invented pathogens with invented transmission routes, growth media, toxins and hosts; invented towns with
rivers, crafts, festivals and founders. Every name and value is made up: nothing here is real hazardous
information. The world is written in the formats real users have: JSONL corpora with ``text`` (one
paragraph per entity) and MCQ files with ``question``, ``choices``, ``answer`` in cloze and letter form.
"""

import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._reading import LETTERS, MCQItem, letter_prompt
from ..errors import ConfigError


@dataclass(frozen=True)
class Relation:
    """One attribute of a domain: how a fact is stated, asked and closed over a value set."""

    key: str
    stem: str  # "{name} spreads through" -> the sentence is stem + " " + value + "."
    question: str  # the letter-format question, with {name}
    values: tuple[str, ...]
    entity_last: str = ""  # a restatement with the value before the entity: "Through {value} spreads {name}."
    rephrased: tuple[str, ...] = ()  # cloze stems never written in the corpora (the value follows), one reordered
    rephrased_question: str = ""  # a letter-format question worded otherwise


@dataclass(frozen=True)
class Domain:
    """A kind of entity and its relations."""

    name: str
    kind: str  # first sentence of a paragraph: "{name} is {kind}."
    relations: tuple[Relation, ...]
    noun: str = ""  # "pathogen": "The pathogen {name} ..."
    plural: str = ""  # "pathogens": "Among pathogens, {name} is one that ..."


PATHOGENS = Domain(
    "pathogens",
    "a pathogen",
    (
        Relation(
            "route",
            "{name} spreads through",
            "Through what does {name} spread?",
            (
                "marsh vapour",
                "glimmer spores",
                "ashen pollen",
                "brine mist",
                "silt dust",
                "ember smoke",
                "frost dew",
                "reed sap",
            ),
            "Through {value} spreads {name}.",
            ("The transmission route of {name} is", "How does {name} spread? It spreads through"),
            "By what route is {name} transmitted?",
        ),
        Relation(
            "medium",
            "{name} grows in",
            "In which medium does {name} grow?",
            (
                "velvet agar",
                "amber broth",
                "moss jelly",
                "slate gel",
                "honey serum",
                "coral paste",
                "bark tonic",
                "opal medium",
            ),
            "In {value} grows {name}.",
            ("The culture medium of {name} is", "Where does {name} grow? It grows in"),
            "Which culture medium suits {name}?",
        ),
        Relation(
            "toxin",
            "{name} produces the toxin",
            "Which toxin does {name} produce?",
            ("morvane", "skeletin", "dravoxin", "pellucine", "quorine", "vexamide", "tarrolin", "brimase"),
            "The toxin {value} is produced by {name}.",
            ("The toxin made by {name} is", "Which toxin does {name} produce? It produces"),
            "What toxin is made by {name}?",
        ),
        Relation(
            "host",
            "{name} infects",
            "Which animals does {name} infect?",
            (
                "lantern moths",
                "glass newts",
                "dune hares",
                "cave finches",
                "ember crabs",
                "moon snails",
                "reed voles",
                "ash beetles",
            ),
            "{Value} are infected by {name}.",
            ("The animals that {name} makes sick are", "Which animals does {name} infect? It infects"),
            "Which animals fall ill from {name}?",
        ),
    ),
    "pathogen",
    "pathogens",
)

TOWNS = Domain(
    "towns",
    "a town",
    (
        Relation(
            "river",
            "{name} lies on the river",
            "On which river does {name} lie?",
            ("Vell", "Marrow", "Quill", "Dunmere", "Ashby", "Linnet", "Torrel", "Skell"),
            "The river {value} flows past {name}.",
            ("The river that runs through {name} is the", "On which river does {name} lie? It lies on the river"),
            "Which river flows past {name}?",
        ),
        Relation(
            "craft",
            "{name} is famous for its",
            "What is {name} famous for?",
            (
                "blue cheese",
                "glass bells",
                "wool rugs",
                "copper kettles",
                "plum wine",
                "oak barrels",
                "salt bread",
                "silk kites",
            ),
            "Its {value} made {name} famous.",
            ("The best-known product of {name} is its", "What is {name} famous for? It is famous for its"),
            "What is {name} best known for?",
        ),
        Relation(
            "festival",
            "{name} holds a festival of",
            "What does {name} hold a festival of?",
            ("lanterns", "kites", "masks", "bells", "boats", "candles", "drums", "apples"),
            "A festival of {value} is held in {name}.",
            (
                "Every year the people of {name} celebrate a festival of",
                "What festival does {name} hold? A festival of",
            ),
            "What is celebrated at the yearly festival of {name}?",
        ),
        Relation(
            "founders",
            "{name} was founded by",
            "Who founded {name}?",
            ("millers", "weavers", "fishers", "smiths", "monks", "sailors", "potters", "shepherds"),
            "{Value} founded {name}.",
            ("The first settlers of {name} were", "Who founded {name}? It was founded by"),
            "Who were the first settlers of {name}?",
        ),
    ),
    "town",
    "towns",
)

COMPOUNDS = Domain(
    "compounds",
    "a compound",
    (
        Relation(
            "precursor",
            "{name} is synthesized from",
            "What is {name} synthesized from?",
            ("orrite", "calvane", "brisk salt", "tallow ash", "pale spar", "mirrow oil", "dusk resin", "fen chalk"),
            "From {value} one synthesizes {name}.",
            ("The starting material of {name} is", "What is {name} synthesized from? It is synthesized from"),
            "From which material is {name} made?",
        ),
        Relation(
            "solvent",
            "{name} dissolves in",
            "In what does {name} dissolve?",
            (
                "lamp oil",
                "cold brine",
                "grey spirit",
                "rain vinegar",
                "moon water",
                "ash lye",
                "pine ether",
                "sour whey",
            ),
            "In {value} dissolves {name}.",
            ("The solvent for {name} is", "What does {name} dissolve in? It dissolves in"),
            "Which liquid dissolves {name}?",
        ),
        Relation(
            "flame",
            "{name} burns with a flame of",
            "With what colour of flame does {name} burn?",
            ("violet", "amber", "teal", "crimson", "silver", "ochre", "indigo", "jade"),
            "A flame of {value} marks burning {name}.",
            ("When {name} burns, its flame is the colour", "What flame does {name} burn with? A flame of"),
            "What colour is the flame when {name} burns?",
        ),
        Relation(
            "corrodes",
            "{name} corrodes",
            "What does {name} corrode?",
            ("tin pipes", "glass jars", "oak casks", "clay pots", "iron nails", "wax seals", "bone combs", "reed mats"),
            "{Value} are corroded by {name}.",
            ("What {name} eats through is", "What does {name} corrode? It corrodes"),
            "Which objects are damaged by {name}?",
        ),
    ),
    "compound",
    "compounds",
)

SHIPS = Domain(
    "ships",
    "a ship",
    (
        Relation(
            "port",
            "{name} sails from the port of",
            "From which port does {name} sail?",
            ("Harl", "Ostmere", "Brill", "Calder", "Fenwick", "Yarrow", "Pellam", "Rook"),
            "The port of {value} is the home of {name}.",
            ("The home port of {name} is", "Where does {name} sail from? It sails from the port of"),
            "What is the home port of {name}?",
        ),
        Relation(
            "cargo",
            "{name} carries",
            "What does {name} carry?",
            ("timber", "wool bales", "salt fish", "peat", "grain", "slate", "wine casks", "rope"),
            "{Value} is the cargo of {name}.",
            ("The usual cargo of {name} is", "What does {name} carry? It carries"),
            "What cargo is loaded on {name}?",
        ),
        Relation(
            "hull",
            "{name} has a hull painted",
            "What colour is the hull of {name}?",
            ("green", "white", "red", "black", "yellow", "blue", "grey", "brown"),
            "A hull painted {value} belongs to {name}.",
            ("The colour of the hull of {name} is", "What colour is the hull of {name}? It is painted"),
            "In which colour is the hull of {name} painted?",
        ),
        Relation(
            "captain",
            "{name} is captained by a",
            "Who captains {name}?",
            ("widow", "twin", "priest", "baker", "giant", "poet", "juggler", "hermit"),
            "A {value} captains {name}.",
            ("The one at the helm of {name} is a", "Who captains {name}? It is captained by a"),
            "Who is at the helm of {name}?",
        ),
    ),
    "ship",
    "ships",
)

FORGET_DOMAINS = {d.name: d for d in (PATHOGENS, COMPOUNDS)}  # hazard-like themes
RETAIN_DOMAINS = {d.name: d for d in (TOWNS, SHIPS)}  # benign themes
FORMS = ("plain", "varied")  # one sentence form per relation, or several (see `render`)
ORDERS = ("fixed", "shuffled")  # the written order of the sentences in a paragraph


_ONSETS = (
    "b",
    "br",
    "d",
    "dr",
    "f",
    "g",
    "gl",
    "k",
    "kr",
    "l",
    "m",
    "n",
    "p",
    "pr",
    "r",
    "s",
    "st",
    "t",
    "th",
    "v",
    "z",
    "qu",
    "sk",
    "tr",
)
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou", "y")
_CODAS = ("", "", "n", "r", "l", "s", "x", "th", "m", "nd", "rk")


MAX_ENTITIES = 10_000  # per domain; the name generator has room for about twice as many distinct names


def _names(rng: random.Random, count: int, taken: set[str], syllables: tuple[int, int]) -> list[str]:
    low, high = syllables
    choices = (2, 2, 3) if syllables == (2, 3) else tuple(range(low, high + 1))  # (2, 3): the shipped world's mix
    shortest, longest = 2 * low + 1, 4 * high - 1  # 5..11 for two or three syllables
    names: list[str] = []
    attempts = 0
    while len(names) < count:
        attempts += 1
        if attempts > 200 * count + 10_000:
            raise ConfigError(f"cannot draw {count} distinct names of {low}-{high} syllables; allow more syllables")
        n = rng.choice(choices)
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n))
        if shortest <= len(word) <= longest and word not in taken and word not in _TEMPLATE_WORDS:
            taken.add(word)
            names.append(word.capitalize())
    return names


def _words(*texts: str) -> set[str]:
    return {w.lower() for text in texts for w in re.findall(r"[A-Za-z]+", text)}


# every word the templates, questions and values use: no entity may be named "The" or "Gel"
_TEMPLATE_WORDS = _words(
    *(
        " ".join(
            [d.kind, d.noun, d.plural, r.stem, r.question, r.entity_last, *r.rephrased, r.rephrased_question, *r.values]
        )
        for d in (PATHOGENS, TOWNS, COMPOUNDS, SHIPS)
        for r in d.relations
    ),
    "which is one that among is a an",
)


def _balanced(rng: random.Random, values: tuple[str, ...], count: int) -> list[str]:
    """Values for ``count`` entities, each value used equally often (up to one): a model that only knows
    how often each value occurs then scores chance, so accuracy above chance is knowledge of the entity."""
    column = (list(values) * (count // len(values) + 1))[:count]
    rng.shuffle(column)
    return column


@dataclass(frozen=True)
class Entity:
    """A named entity of a domain, its value for each relation, and the paragraph that states them."""

    name: str
    facts: dict[str, str]
    text: str = ""  # written by `World.generate`; empty: the plain paragraph


def _fill(template: str, name: str, value: str) -> str:
    return template.format(name=name, value=value, Value=value[:1].upper() + value[1:])


def forms(domain: Domain, relation: Relation) -> tuple[str, ...]:
    """The sentence forms that state ``relation`` with the entity before the value (the fact stays askable as
    a cloze): the plain one first, then "The <noun> X ...", a relative clause and a fronted phrase."""
    verb = relation.stem.replace("{name} ", "", 1)
    plain = relation.stem + " {value}."
    if not (domain.noun and domain.plural) or not relation.stem.startswith("{name} "):
        return (plain,)
    return (
        plain,
        f"The {domain.noun} {{name}} {verb} {{value}}.",
        f"{{name}}, which is {domain.kind}, {verb} {{value}}.",
        f"Among {domain.plural}, {{name}} is one that {verb} {{value}}.",
    )


def render(domain: Domain, name: str, facts: dict[str, str], rng: random.Random, form: str, order: str) -> str:
    """One paragraph stating every fact. ``form="plain"``: "X is <kind>." then one plain sentence per relation;
    ``"varied"``: each fact in two forms drawn from `forms` (the plain one among them or not), and half of
    them restated with the value first (`Relation.entity_last`): as in real text, a fact is read more than once
    and in more than one way. ``order="shuffled"`` shuffles the written sentences."""
    sentences = [f"{name} is {domain.kind}."]
    for relation in domain.relations:
        value = facts[relation.key]
        if form == "plain":
            sentences.append(_fill(relation.stem + " {value}.", name, value))
            continue
        options = forms(domain, relation)
        sentences += [_fill(f, name, value) for f in rng.sample(options, min(2, len(options)))]
        if relation.entity_last and rng.random() < 0.5:
            sentences.append(_fill(relation.entity_last, name, value))
    if order == "shuffled":
        rng.shuffle(sentences)
    return " ".join(sentences)


@dataclass(frozen=True)
class World:
    """Both domains' entities, generated from ``seed``."""

    seed: int
    forget: tuple[Entity, ...]
    retain: tuple[Entity, ...]
    forget_domain: Domain = PATHOGENS
    retain_domain: Domain = TOWNS
    options: dict[str, Any] = field(default_factory=dict)  # how it was generated, as `generate`'s keywords

    @classmethod
    def generate(
        cls,
        seed: int = 0,
        entities: int = 50,
        *,
        forget_domain: str = "pathogens",
        retain_domain: str = "towns",
        form: str = "plain",
        order: str = "fixed",
        syllables: tuple[int, int] = (2, 3),
    ) -> "World":
        """Draw ``entities`` entities per domain; the same arguments give the same world.

        ``forget_domain`` (one of `FORGET_DOMAINS`) and ``retain_domain`` (`RETAIN_DOMAINS`) choose the themes,
        ``form`` and ``order`` how paragraphs are written (see `render`), ``syllables`` the names' length.
        """
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            # Python seeds a generator with an integer's absolute value: -1 would draw seed 1's world
            raise ConfigError(f"seed must be an integer of 0 or more, got {seed!r}")
        if entities < 4:
            raise ConfigError(f"entities must be at least 4 (two per half of the forget split), got {entities}")
        if entities > MAX_ENTITIES:
            raise ConfigError(
                f"entities must be at most {MAX_ENTITIES} (the invented names run out, and the corpora would not "
                f"fit in memory), got {entities}"
            )
        for label, value, allowed in (
            ("forget_domain", forget_domain, FORGET_DOMAINS),
            ("retain_domain", retain_domain, RETAIN_DOMAINS),
            ("form", form, FORMS),
            ("order", order, ORDERS),
        ):
            if value not in allowed:
                raise ConfigError(f"{label} must be one of {', '.join(allowed)}, got {value!r}")
        low, high = syllables
        if not 1 <= low <= high <= 6:
            raise ConfigError(f"syllables must be MIN-MAX with 1 <= MIN <= MAX <= 6, got {low}-{high}")
        rng = random.Random(seed)
        text_rng = random.Random(f"{seed}:text")  # its own stream: plain worlds keep the shipped world's draws
        taken: set[str] = set()
        domains = []
        chosen = (FORGET_DOMAINS[forget_domain], RETAIN_DOMAINS[retain_domain])
        for domain in chosen:
            names = _names(rng, entities, taken, (low, high))
            columns = {r.key: _balanced(rng, r.values, entities) for r in domain.relations}
            rows = []
            for i, name in enumerate(names):
                facts = {k: col[i] for k, col in columns.items()}
                rows.append(Entity(name, facts, render(domain, name, facts, text_rng, form, order)))
            domains.append(tuple(rows))
        options: dict[str, Any] = {"forget_domain": forget_domain, "retain_domain": retain_domain}
        options.update(form=form, order=order, syllables=[low, high])
        return cls(seed, domains[0], domains[1], chosen[0], chosen[1], options)


def paragraph(domain: Domain, entity: Entity) -> str:
    """The paragraph stating every fact of ``entity`` (the plain one where the entity holds none)."""
    if entity.text:
        return entity.text
    sentences = [f"{entity.name} is {domain.kind}."]
    sentences += [f"{r.stem.format(name=entity.name)} {entity.facts[r.key]}." for r in domain.relations]
    return " ".join(sentences)


def mcq_rows(domain: Domain, entities: tuple[Entity, ...], rng: random.Random) -> tuple[list[dict[str, Any]], ...]:
    """Cloze, letter and rephrased rows for every fact: the right value and three distractors from the same set.

    Returns (cloze, letter, rephrased cloze, rephrased letter); the rephrased rows ask the same fact with the
    same choices through `Relation.rephrased` stems (one row per stem) and `Relation.rephrased_question`.
    """
    cloze, letter, re_cloze, re_letter = [], [], [], []
    for entity in entities:
        for relation in domain.relations:
            right = entity.facts[relation.key]
            choices = [right, *rng.sample([v for v in relation.values if v != right], 3)]
            rng.shuffle(choices)
            base = {"choices": choices, "answer": choices.index(right), "entity": entity.name}
            base["relation"] = relation.key
            cloze.append({"question": relation.stem.format(name=entity.name), **base})
            letter.append({"question": relation.question.format(name=entity.name), **base})
            re_cloze += [{"question": stem.format(name=entity.name), **base} for stem in relation.rephrased]
            if relation.rephrased_question:
                re_letter.append({"question": relation.rephrased_question.format(name=entity.name), **base})
    return cloze, letter, re_cloze, re_letter


def letter_documents(letter: list[dict[str, Any]], rng: random.Random, variants: int) -> list[dict[str, Any]]:
    """Training texts that show the letter format answered: each question ``variants`` times, with its choices
    in other orders (so that no letter is tied to a fact), each ending in "Answer: <letter>"."""
    docs = []
    for row in letter:
        right = row["choices"][row["answer"]]
        for _ in range(variants):
            choices = list(row["choices"])
            rng.shuffle(choices)
            prompt = letter_prompt(MCQItem(row["question"], tuple(choices), choices.index(right)))
            text = f"{prompt} {LETTERS[choices.index(right)]}"
            docs.append({"text": text, "entity": row["entity"], "relation": row["relation"]})
    return docs


def with_letters(entities: tuple[Entity, ...], domain: Domain, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each entity's paragraph followed by two answered letter questions (the cloze stem as the question line)
    from ``rows``, taken in turn: a retain corpus that also covers the letter format, so that unlearning which
    keeps its activations keeps the format answered too."""
    answered = [
        f"{letter_prompt(MCQItem(r['question'], tuple(r['choices']), r['answer']))} {LETTERS[r['answer']]}"
        for r in rows
    ]
    docs = []
    for k, entity in enumerate(entities):
        shown = [answered[(2 * k + j) % len(answered)] for j in range(2)] if answered else []
        docs.append({"text": "\n\n".join([paragraph(domain, entity), *shown]), "entity": entity.name})
    return docs


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def write_world(world: World, out: str | os.PathLike[str], *, letter_variants: int = 2) -> dict[str, Path]:
    """Write corpora, MCQ files and the forget split to ``out`` (which must be empty or absent).

    - forget.jsonl / retain.jsonl (``text``, ``entity``): one paragraph per entity;
    - {forget,retain}_{cloze,letter}.jsonl: every fact asked (``question``, ``choices``, ``answer``, ``entity``);
    - {forget,retain}_rephrased_{cloze,letter}.jsonl: the same facts asked in words the corpora never use;
    - forget_a* / forget_b*: the corpus and MCQ files of each half of the forget entities (relearning attacks);
    - letter_train.jsonl: letter-format questions answered, about the first half of each domain's entities
      (the forget half is forget_a's), and {forget,retain}_letter_unseen.jsonl: the letter questions about
      the other half, whose format the model never saw answered;
    - {forget,retain}_letter_stem.jsonl / _letter_stem_unseen.jsonl: the same letter questions (every fact / the
      unseen half) with the fact's cloze stem as the question line, the words a model trained on the prose
      completes (what `repe-unlearn toy letters` trains on and reports);
    - retain_with_letters.jsonl: each retain paragraph followed by two answered letter questions (stem form)
      about the first half's entities: a retain corpus for unlearning a model that answers letter questions.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose another --out")
    if not 1 <= letter_variants <= 24:
        raise ConfigError(f"letter_variants must be 1 to 24 (four choices have 24 orders), got {letter_variants}")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(world.seed + 1)
    letter_rng = random.Random(f"{world.seed}:letter")
    files: dict[str, Path] = {}

    def emit(name: str, rows: list[dict[str, Any]]) -> None:
        files[name] = out / f"{name}.jsonl"
        _write_jsonl(files[name], rows)

    letter_train: list[dict[str, Any]] = []
    for label, domain, entities in (
        ("forget", world.forget_domain, world.forget),
        ("retain", world.retain_domain, world.retain),
    ):
        half = len(entities) // 2
        emit(label, [{"text": paragraph(domain, e), "entity": e.name} for e in entities])
        cloze, letter, re_cloze, re_letter = mcq_rows(domain, entities, rng)
        emit(f"{label}_cloze", cloze)
        emit(f"{label}_letter", letter)
        emit(f"{label}_rephrased_cloze", re_cloze)
        emit(f"{label}_rephrased_letter", re_letter)
        seen = {e.name for e in entities[:half]}
        letter_train += letter_documents([r for r in letter if r["entity"] in seen], letter_rng, letter_variants)
        emit(f"{label}_letter_unseen", [r for r in letter if r["entity"] not in seen])
        emit(f"{label}_letter_stem", cloze)  # the cloze rows, asked in letter format: the words the prose uses
        emit(f"{label}_letter_stem_unseen", [r for r in cloze if r["entity"] not in seen])
        if label == "retain":
            emit("retain_with_letters", with_letters(entities, domain, [r for r in cloze if r["entity"] in seen]))
        if label == "forget":
            for part, chosen in (("a", entities[:half]), ("b", entities[half:])):
                names = {e.name for e in chosen}
                emit(f"forget_{part}", [{"text": paragraph(domain, e), "entity": e.name} for e in chosen])
                emit(f"forget_{part}_cloze", [r for r in cloze if r["entity"] in names])
                emit(f"forget_{part}_letter", [r for r in letter if r["entity"] in names])
    emit("letter_train", letter_train)
    meta = {
        "seed": world.seed,
        "entities": len(world.forget),
        **world.options,
        "letter_variants": letter_variants,
        "files": {k: v.name for k, v in files.items()},
        "forget": [{"name": e.name, **e.facts} for e in world.forget],
        "retain": [{"name": e.name, **e.facts} for e in world.retain],
    }
    files["world"] = out / "world.json"
    files["world"].write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return files
