import pytest
import torch

import repe_unlearn as ru
from repe_unlearn.diagnostics import (
    cache_norms,
    cosine_to_direction,
    fit_choice_probe,
    fit_probe,
    max_abs_difference,
    paired_cosine,
    split,
    token_norms,
)

ACTS = torch.tensor([[[3.0, 4.0], [0.0, 1.0], [9.0, 9.0]], [[1.0, 0.0], [0.0, 2.0], [6.0, 8.0]]])
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])


def test_token_norms_skip_padding() -> None:
    assert torch.allclose(token_norms(ACTS, MASK), torch.tensor([(5 + 1) / 2, (1 + 2 + 10) / 3]))
    assert torch.allclose(token_norms(ACTS), torch.tensor([(5 + 1 + 9 * 2**0.5) / 3, 13 / 3]))


def test_cosines() -> None:
    direction = torch.tensor([0.0, 2.0])
    expected = torch.tensor([(0.8 + 1.0) / 2, (0.0 + 1.0 + 0.8) / 3])
    assert torch.allclose(cosine_to_direction(ACTS, direction, MASK), expected)
    assert torch.allclose(paired_cosine(ACTS, 3 * ACTS, MASK), torch.ones(2))
    assert torch.allclose(paired_cosine(ACTS, -ACTS, MASK), -torch.ones(2))


def test_max_abs_difference_ignores_padding() -> None:
    other = ACTS.clone()
    other[0, 2] += 100  # a pad position
    assert float(max_abs_difference(ACTS, other, MASK)) == 0.0
    other[1, 0, 1] += 0.5
    assert float(max_abs_difference(ACTS, other, MASK)) == 0.5
    stacked = torch.stack([ACTS, ACTS + 1])
    assert torch.equal(token_norms(stacked, MASK)[0], token_norms(ACTS, MASK))
    assert torch.equal(max_abs_difference(stacked, stacked, MASK), torch.zeros(2))


def test_cache_norms_on_a_cache_a_user_holds() -> None:
    cache = ru.ActivationCache({0: ACTS, 1: 2 * ACTS}, attention_mask=MASK)
    norms = cache_norms(cache)
    assert norms[1] == pytest.approx(2 * norms[0]) and norms[0] == pytest.approx(float(token_norms(ACTS, MASK).mean()))


def test_split_is_seeded_stratified_and_disjoint() -> None:
    labels = torch.tensor([0] * 10 + [1] * 20)
    train, test = split(30, test_fraction=0.3, seed=1, labels=labels)
    assert set(train.tolist()).isdisjoint(test.tolist()) and len(train) + len(test) == 30
    assert int((labels[test] == 0).sum()) == 3 and int((labels[test] == 1).sum()) == 6
    assert torch.equal(split(30, seed=1, labels=labels)[1], test)


def test_probe_reads_a_planted_signal_and_not_noise() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (300,), generator=g)
    features = torch.randn(300, 16, generator=g)
    features[:, 0] += 4 * labels  # the class is written along one axis
    assert fit_probe(features, labels, n_classes=3).test_accuracy > 0.9
    noise = fit_probe(torch.randn(300, 16, generator=g), labels, n_classes=3)
    assert noise.test_accuracy < 0.55 and noise.chance >= 1 / 3


def test_choice_probe_reads_which_value_comes_next() -> None:
    g = torch.Generator().manual_seed(0)
    n, values = 240, 8
    choice_ids = torch.stack([torch.randperm(values, generator=g)[:4] for _ in range(n)])
    answers = torch.randint(0, 4, (n,), generator=g)
    truth = choice_ids[torch.arange(n), answers]
    features = torch.randn(n, 12, generator=g) * 0.1
    features[:, :values] += torch.nn.functional.one_hot(truth, values).float()
    result = fit_choice_probe(features, choice_ids, answers, n_values=values)
    assert result.test_accuracy > 0.9 and result.chance == 0.25
    shuffled = fit_choice_probe(features, choice_ids, answers[torch.randperm(n, generator=g)], n_values=values)
    assert shuffled.test_accuracy < 0.5
