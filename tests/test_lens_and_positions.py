"""Logits and cache in one call, the logit lens, and interventions at chosen positions: exact on tiny models."""

import pytest
import torch
from conftest import D_MODEL, N_LAYERS
from torch import Tensor, nn

import repe_unlearn as ru


@torch.no_grad()
def test_run_with_cache_returns_the_logits_and_every_hidden_state(model: nn.Module, batch: dict) -> None:
    output, cache = ru.run_with_cache(model, batch)
    reference = model(**batch, output_hidden_states=True)
    assert torch.equal(output.logits, reference.logits)
    for layer in range(N_LAYERS - 1):  # the last hidden state transformers returns is after the final norm
        assert torch.equal(cache[layer], reference.hidden_states[layer + 1])
    assert torch.equal(cache.attention_mask, batch["attention_mask"])


@torch.no_grad()
def test_run_with_cache_several_points_and_a_names_filter(llama: nn.Module, batch: dict) -> None:
    _, caches = ru.run_with_cache(
        llama, batch, points=["resid_pre", "mlp_out"], names_filter=lambda name: name in ("resid_pre.1", "mlp_out.2")
    )
    assert isinstance(caches, dict) and caches["resid_pre"].layers == [1] and caches["mlp_out"].layers == [2]
    with ru.record(llama, 1, "resid_pre") as pre, ru.record(llama, 2, "mlp_out") as mlp:
        llama(**batch)
    assert torch.equal(caches["resid_pre"][1], pre[1]) and torch.equal(caches["mlp_out"][2], mlp[2])
    with pytest.raises(ru.ConfigError, match="kept no hook"):
        ru.run_with_cache(llama, batch, names_filter=lambda name: False)


@torch.no_grad()
def test_the_logit_lens_on_the_last_layer_is_the_models_own_logits(model: nn.Module, batch: dict) -> None:
    output, cache = ru.run_with_cache(model, batch, layers=[N_LAYERS - 1])
    assert torch.allclose(ru.logit_lens(model, cache[N_LAYERS - 1]), output.logits.float(), atol=1e-5, rtol=1e-5)
    early = ru.logit_lens(model, cache[N_LAYERS - 1][:, :2])
    assert early.shape == (3, 2, model.config.vocab_size)


def steered_rows(model: nn.Module, batch: dict, positions: object, layer: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    vector = ru.ControlVector({layer: torch.randn(D_MODEL, generator=torch.Generator().manual_seed(0))})
    with torch.no_grad():
        with ru.record(model, layer) as plain:
            model(**batch)
        steer = vector.apply(model, 2.0, positions=positions)  # type: ignore[arg-type]
        with steer, ru.record(model, layer) as steered:
            model(**batch)
    return plain[layer], steered[layer], 2.0 * vector[layer]


@pytest.mark.parametrize(
    ("positions", "expected"),
    [
        ("all", lambda mask: torch.ones_like(mask, dtype=torch.bool)),
        ("non-pad", lambda mask: mask.bool()),
        ("last", lambda mask: torch.tensor([[0] * 6 + [1], [0] * 4 + [1, 0, 0], [0] * 6 + [1]]).bool()),
        (5, lambda mask: torch.arange(7).expand(3, 7) >= 5),
        (slice(1, 3), lambda mask: (torch.arange(7) >= 1).logical_and(torch.arange(7) < 3).expand(3, 7)),
        (torch.tensor([True, False, True, False, False, False, False]), lambda mask: torch.tensor(
            [True, False, True, False, False, False, False]).expand(3, 7)),
    ],
)  # fmt: skip
def test_steering_acts_exactly_at_the_chosen_positions(llama: nn.Module, batch: dict, positions, expected) -> None:
    plain, steered, delta = steered_rows(llama, batch, positions)
    chosen = expected(batch["attention_mask"])
    assert torch.equal(steered[chosen], (plain + delta)[chosen])
    assert torch.equal(steered[~chosen], plain[~chosen])


@torch.no_grad()
def test_ablation_at_the_last_token_only(llama: nn.Module, batch: dict) -> None:
    r = torch.randn(D_MODEL)
    with ru.record(llama, 1) as plain:
        llama(**batch)
    with ru.ablate_direction(llama, r, [1], positions="last"), ru.record(llama, 1) as ablated:
        llama(**batch)
    last = torch.tensor([6, 4, 6])
    rows = torch.arange(3)
    unit = r / r.norm()
    assert (ablated[1][rows, last] @ unit).abs().max() < 1e-5
    others = torch.ones(3, 7, dtype=torch.bool)
    others[rows, last] = False
    assert torch.equal(ablated[1][others], plain[1][others])


def test_bad_positions_are_refused(llama: nn.Module) -> None:
    vector = ru.ControlVector({1: torch.ones(D_MODEL)})
    from repe_unlearn._positions import check_positions

    with pytest.raises(ru.ConfigError, match="unknown positions"):
        check_positions("first")  # what apply() runs first (beartype refuses the literal itself at test time)
    with pytest.raises(ru.ConfigError, match="bool tensor"):
        vector.apply(llama, positions=torch.tensor([1, 0]))
    with pytest.raises(ru.ConfigError, match="not both"):
        vector.apply(llama, positions="last", only_non_pad=True)
