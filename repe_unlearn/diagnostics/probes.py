"""Linear probes: multinomial logistic regression trained with full-batch L-BFGS on a seeded split.

``fit_probe`` predicts a class from one vector per example (the answer letter of an MCQ item from the last
prompt token, or forget-vs-retain from a text's mean activation). ``fit_choice_probe`` scores the choices of a
cloze item from the activation at the end of its stem, with one read-out per distinct choice text.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import ConfigError

if TYPE_CHECKING:
    from .._vectors import ControlVector


@dataclass(frozen=True)
class ProbeResult:
    """Held-out accuracy of a probe, with the chance level to read it against, and its weights.

    ``weight`` is ``[d_model class]`` in the activations' own units (the standardisation folded in): the
    logit of class k is ``x @ weight[:, k] + bias[k]``. :meth:`direction` turns two classes into a
    `ControlVector` to steer or ablate with.
    """

    test_accuracy: float
    train_accuracy: float
    chance: float
    n_train: int
    n_test: int
    weight: Tensor | None = field(default=None, compare=False, repr=False)
    bias: Tensor | None = field(default=None, compare=False, repr=False)
    layer: int | None = None  # the layer whose activations it read, where the caller said

    def direction(self, class_a: int, class_b: int, *, layer: int | None = None) -> "ControlVector":
        """The direction that raises class ``class_a``'s logit over ``class_b``'s, ``weight[:, a] - weight[:, b]``,
        as a `ControlVector` at the probe's layer (or ``layer``), normalised to unit length."""
        from .._vectors import ControlVector

        if self.weight is None:
            raise ConfigError("this probe result holds no weights")
        classes = self.weight.shape[1]
        for name, k in (("class_a", class_a), ("class_b", class_b)):
            if not 0 <= k < classes:
                raise ConfigError(f"{name} {k} is not a class of this probe (0..{classes - 1})")
        if class_a == class_b:
            raise ConfigError("class_a and class_b are the same class: no direction separates them")
        where = layer if layer is not None else self.layer
        if where is None:
            raise ConfigError("this probe does not know its layer; pass layer=")
        vector = self.weight[:, class_a] - self.weight[:, class_b]
        metadata = {"source": "probe", "class_a": class_a, "class_b": class_b, "norm": float(vector.norm())}
        metadata["test_accuracy"] = self.test_accuracy
        return ControlVector({where: vector / vector.norm().clamp(min=1e-12)}, metadata=metadata)


def split(n: int, *, test_fraction: float = 0.3, seed: int = 0, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Train and test indices of a seeded random split (at least one example on each side); with ``labels``,
    stratified, so that each class is split in the same proportion."""
    if n < 2:
        raise ConfigError(f"a probe needs at least 2 examples, got {n}")
    generator = torch.Generator().manual_seed(seed)
    groups = [torch.arange(n)] if labels is None else [torch.nonzero(labels == c)[:, 0] for c in labels.unique()]
    train, test = [], []
    for group in groups:
        order = group[torch.randperm(len(group), generator=generator)]
        n_test = min(round(len(group) * test_fraction), len(group) - 1) if len(group) > 1 else 0
        test.append(order[:n_test])
        train.append(order[n_test:])
    train_idx, test_idx = torch.cat(train), torch.cat(test)
    if len(test_idx) == 0:
        return train_idx[1:], train_idx[:1]
    return train_idx, test_idx


def _indices(indices: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor] | None:
    if indices is None:
        return None
    train, test = (torch.as_tensor(i, dtype=torch.long) for i in indices)
    if len(train) == 0 or len(test) == 0:
        raise ConfigError(f"a probe needs train and test rows, got {len(train)} and {len(test)}")
    if set(train.tolist()) & set(test.tolist()):
        raise ConfigError("the probe's train and test rows overlap")
    return train, test


def _lbfgs(params: list[Tensor], loss_fn: object, max_iter: int) -> None:
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss: Tensor = loss_fn()  # type: ignore[operator]
        loss.backward()
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]


def _stats(train: Tensor) -> tuple[Tensor, Tensor]:
    dims = tuple(range(train.ndim - 1))
    return train.mean(dim=dims), train.std(dim=dims).clamp(min=1e-6)


def _standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    mean, std = _stats(train)
    return [(t - mean) / std for t in (train, *others)]


def _raw(weight: Tensor, bias: Tensor, train: Tensor) -> tuple[Tensor, Tensor]:
    """Weights on standardised inputs -> the same read-out on the raw activations."""
    mean, std = _stats(train)
    raw = weight.detach() / std[:, None]
    return raw, bias.detach() - mean @ raw


def fit_probe(
    features: Float[Tensor, "example d_model"],
    labels: Int[Tensor, " example"],
    *,
    n_classes: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.3,
    l2: float = 1e-3,
    max_iter: int = 200,
    indices: tuple[Tensor, Tensor] | None = None,
    layer: int | None = None,
) -> ProbeResult:
    """Multinomial logistic regression on a seeded split (or on ``indices``: the train and test rows, to keep
    what the probe learns from apart from what it is scored on); chance is the test set's majority-class rate."""
    if features.shape[0] != labels.shape[0]:
        raise ConfigError(f"{features.shape[0]} feature rows but {labels.shape[0]} labels")
    classes = int(labels.max()) + 1 if n_classes is None else n_classes
    train, test = _indices(indices) or split(features.shape[0], test_fraction=test_fraction, seed=seed, labels=labels)
    x_train, x_test = _standardise(features[train].float(), features[test].float())
    y_train, y_test = labels[train].long(), labels[test].long()
    with torch.enable_grad():
        weight = torch.zeros(features.shape[1], classes, requires_grad=True)
        bias = torch.zeros(classes, requires_grad=True)

        def loss() -> Tensor:
            logits = x_train @ weight + bias
            return torch.nn.functional.cross_entropy(logits, y_train) + l2 * weight.square().sum()

        _lbfgs([weight, bias], loss, max_iter)
    with torch.no_grad():
        train_acc = float(((x_train @ weight + bias).argmax(-1) == y_train).float().mean())
        test_acc = float(((x_test @ weight + bias).argmax(-1) == y_test).float().mean())
    chance = float(torch.bincount(y_test, minlength=classes).max()) / len(y_test)
    raw, raw_bias = _raw(weight, bias, features[train].float())
    return ProbeResult(test_acc, train_acc, chance, len(train), len(test), raw, raw_bias, layer)


def fit_choice_probe(
    features: Float[Tensor, "example d_model"],
    choice_ids: Int[Tensor, "example choice"],
    answers: Int[Tensor, " example"],
    *,
    n_values: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.3,
    l2: float = 1e-3,
    max_iter: int = 200,
    indices: tuple[Tensor, Tensor] | None = None,
    layer: int | None = None,
) -> ProbeResult:
    """Cloze items: from the activation at the end of the stem, score each choice with that choice's own
    linear read-out (one weight vector per distinct choice text) and pick the highest of the item's choices.

    This reads what the model is about to say. (A single scorer shared by all choices, applied to the
    activation after stem + choice, could not even fit the toy model's training items: it measured the
    probe, not the model.)
    """
    if not features.shape[0] == choice_ids.shape[0] == answers.shape[0]:
        raise ConfigError(
            f"{features.shape[0]} feature rows, {choice_ids.shape[0]} choice rows, {answers.shape[0]} answers"
        )
    values = int(choice_ids.max()) + 1 if n_values is None else n_values
    train, test = _indices(indices) or split(features.shape[0], test_fraction=test_fraction, seed=seed)
    x_train, x_test = _standardise(features[train].float(), features[test].float())
    ids_train, ids_test = choice_ids[train].long(), choice_ids[test].long()
    y_train, y_test = answers[train].long(), answers[test].long()
    with torch.enable_grad():
        weight = torch.zeros(features.shape[1], values, requires_grad=True)
        bias = torch.zeros(values, requires_grad=True)

        def scores(x: Tensor, ids: Tensor) -> Tensor:
            return (x @ weight + bias).gather(1, ids)

        def loss() -> Tensor:
            return torch.nn.functional.cross_entropy(scores(x_train, ids_train), y_train) + l2 * weight.square().sum()

        _lbfgs([weight, bias], loss, max_iter)
    with torch.no_grad():
        train_acc = float((scores(x_train, ids_train).argmax(-1) == y_train).float().mean())
        test_acc = float((scores(x_test, ids_test).argmax(-1) == y_test).float().mean())
    raw, raw_bias = _raw(weight, bias, features[train].float())
    chance = 1.0 / choice_ids.shape[1]
    return ProbeResult(test_acc, train_acc, chance, len(train), len(test), raw, raw_bias, layer)
