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


# -- activation patching -------------------------------------------------------------------------------------------
def two_runs(batch: dict) -> tuple[dict, dict]:
    clean = {"input_ids": batch["input_ids"][:1], "attention_mask": torch.ones(1, 7, dtype=torch.long)}
    corrupted = {"input_ids": clean["input_ids"].clone(), "attention_mask": clean["attention_mask"]}
    corrupted["input_ids"][0, 1] = (corrupted["input_ids"][0, 1] + 7) % 90 + 3  # another "subject" token
    return clean, corrupted


@torch.no_grad()
def test_patching_every_position_of_a_layer_reproduces_the_clean_run(model: nn.Module, batch: dict) -> None:
    clean, corrupted = two_runs(batch)
    output, cache = ru.run_with_cache(model, clean, layers=[1])
    with ru.patch(model, cache):
        patched = model(**corrupted).logits
    assert torch.equal(patched, output.logits)
    assert not torch.equal(model(**corrupted).logits, output.logits)  # the corruption matters
    assert ru.active_hooks(model) == []


@torch.no_grad()
def test_a_patching_sweep_locates_what_the_last_position_reads(llama: nn.Module, batch: dict) -> None:
    clean, corrupted = two_runs(batch)
    answer = int(llama(**clean).logits[0, -1].argmax())
    sweep = ru.patching_sweep(llama, clean, corrupted, lambda logits: logits[0, -1, answer])
    assert sweep.effects.shape == (N_LAYERS, 7) and sweep.layers == list(range(N_LAYERS))
    last = N_LAYERS - 1
    assert float(sweep.effects[last, -1]) == pytest.approx(1.0, abs=1e-6)  # the last residual is the prediction
    assert float(sweep.effects[last, 0]) == 0.0  # after the last layer, position 0 reaches nothing
    assert torch.all(sweep.effects[:, 0] == 0.0)  # position 0 is the same token in both runs
    with pytest.raises(ru.ShapeError, match="same positions"):
        ru.patching_sweep(llama, clean, {k: v[:, :5] for k, v in corrupted.items()}, lambda logits: logits.sum())


# -- caching across generate ---------------------------------------------------------------------------------------
@torch.no_grad()
def test_every_pass_of_a_generation_is_kept(llama: nn.Module, batch: dict) -> None:
    prompt = {"input_ids": batch["input_ids"][:1], "attention_mask": torch.ones(1, 7, dtype=torch.long)}
    with ru.record(llama, [1, 3], every_pass=True) as cache:
        generated = llama.generate(**prompt, max_new_tokens=4, min_new_tokens=2, do_sample=False, pad_token_id=0)
    new = generated.shape[1] - 7  # up to 4 (it stops at EOS)
    assert new >= 2 and [step[1].shape[1] for step in cache.steps] == [7] + [1] * (new - 1)  # prompt, then a token
    assert cache[1].shape == (1, 6 + new, D_MODEL)
    with ru.record(llama, [1, 3]) as whole:  # the same positions in one pass, without the KV cache
        llama(input_ids=generated[:, :-1])
    for layer in (1, 3):
        assert torch.allclose(cache[layer], whole[layer], atol=1e-5)
    with pytest.raises(ru.ConfigError, match="every_pass"):
        with ru.record(llama, 1, every_pass=True, stop_after=True):
            pass
