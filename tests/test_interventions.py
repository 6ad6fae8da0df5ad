"""Interventions a researcher can trust: lazy specs, one application per hook, no stale or missing state.

Each test here reproduces a silent wrong number (or a raw traceback) found by outside users.
"""


import numpy as np
import pytest
import torch
import transformers as tf
from conftest import D_MODEL, N_LAYERS, make_config, make_model
from torch import Tensor, nn

import repe_unlearn as ru
from repe_unlearn.data import MCQItem
from repe_unlearn.evaluation import evaluate_mcq

ITEMS = [
    MCQItem("the cat sat on the", ("mat", "park", "river"), 0),
    MCQItem("a dog ran in the", ("mat", "park", "bridge"), 1),
    MCQItem("the virus spreads through", ("water", "town", "cat"), 0),
    MCQItem("the town has a river and a", ("bridge", "virus", "dog"), 0),
]


def random_vector(layers: list[int], seed: int = 0, point: ru.HookPoint = "resid_post") -> ru.ControlVector:
    generator = torch.Generator().manual_seed(seed)
    return ru.ControlVector({layer: torch.randn(D_MODEL, generator=generator) for layer in layers}, point=point)


@torch.no_grad()
def logits(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    return model(**batch).logits


def scores(model: nn.Module, tokenizer: object, **kwargs: object) -> list[list[float]]:
    result = evaluate_mcq(model, tokenizer, ITEMS, format="cloze", **kwargs)  # type: ignore[arg-type]
    return [p.scores for p in result.predictions]


# -- 1: apply/ablate are lazy and reusable ------------------------------------------------------------------------
def test_apply_touches_nothing_until_entered_and_can_be_entered_again(llama: nn.Module, batch: dict) -> None:
    plain = logits(llama, batch)
    iv = random_vector([1, 2]).apply(llama, 8.0)
    assert ru.active_hooks(llama) == []
    assert torch.equal(logits(llama, batch), plain)  # defined, not entered: the model is untouched
    with iv:
        steered = logits(llama, batch)
    assert not torch.equal(steered, plain)
    assert torch.equal(logits(llama, batch), plain)
    with iv:  # a second entry steers exactly as the first
        assert torch.equal(logits(llama, batch), steered)
    assert ru.active_hooks(llama) == []


def test_an_intervention_defined_ahead_steers_only_the_evaluations_it_is_given(llama: nn.Module, tokenizer) -> None:
    before = scores(llama, tokenizer)
    iv = random_vector([1, 2]).apply(llama, 8.0)
    assert scores(llama, tokenizer) == before  # an evaluation in between runs unsteered
    first = scores(llama, tokenizer, intervention=iv)
    second = scores(llama, tokenizer, intervention=iv)
    assert first == second != before
    assert scores(llama, tokenizer) == before


def test_ablation_and_ablate_direction_are_lazy_too(llama: nn.Module, batch: dict) -> None:
    plain = logits(llama, batch)
    r = torch.randn(D_MODEL)
    for iv in (ru.ablate_direction(llama, r, [1, 2]), random_vector([1]).ablate(llama)):
        assert torch.equal(logits(llama, batch), plain)
        with iv:
            ablated = logits(llama, batch)
        with iv:
            assert torch.equal(logits(llama, batch), ablated)
        assert not torch.equal(ablated, plain)


def test_a_failing_evaluation_leaves_no_hook_behind(llama: nn.Module, tokenizer) -> None:
    iv = random_vector([1]).apply(llama, 8.0)
    with pytest.raises(ru.DataError):
        evaluate_mcq(llama, tokenizer, [], intervention=iv)
    handle = random_vector([1]).attach(llama)
    with pytest.raises(ru.ConfigError):
        evaluate_mcq(llama, tokenizer, ITEMS, batch_size=0, intervention=handle)
    assert ru.active_hooks(llama) == [] and not handle.active


def test_entering_a_removed_handle_raises(llama: nn.Module) -> None:
    handle = random_vector([1]).attach(llama)
    with handle:
        pass
    with pytest.raises(ru.HookPointError, match="already removed"):
        with handle:
            pass


def test_entering_an_active_intervention_again_raises(llama: nn.Module) -> None:
    iv = random_vector([1]).apply(llama)
    with iv:
        with pytest.raises(ru.ConfigError, match="apply it twice"):
            with iv:
                pass
    assert ru.active_hooks(llama) == []


def test_composition_with_plus_and_lists_equals_nesting(llama: nn.Module, batch: dict, tokenizer) -> None:
    a, b = random_vector([1], seed=1).apply(llama, 3.0), ru.ablate_direction(llama, torch.randn(D_MODEL), [2])
    with a, b:
        nested = logits(llama, batch)
    with a + b:
        assert torch.equal(logits(llama, batch), nested)
    with sum([a, b]):  # type: ignore[arg-type]
        assert torch.equal(logits(llama, batch), nested)
    with a:
        nested_scores = scores(llama, tokenizer, intervention=b)
    assert scores(llama, tokenizer, intervention=[a, b]) == nested_scores
    assert ru.active_hooks(llama) == []


# -- 2: RMU under steering: the updated and the frozen model see each hook once -----------------------------------
@pytest.mark.parametrize("point", ["resid_pre", "resid_post", "mlp_out", "attn_out"])
@pytest.mark.parametrize("only_non_pad", [False, True])
def test_rmu_under_steering_starts_with_a_zero_retain_loss(point: ru.HookPoint, only_non_pad: bool, tokenizer) -> None:
    from conftest import FORGET, RETAIN

    from repe_unlearn import rmu

    config = rmu.RMUConfig(layer=3, steering_coeff=(5.0,), alpha=(10.0,), batch_size=4, max_batches=2, max_length=16)
    plain = rmu.unlearn(make_model("llama"), tokenizer, [FORGET], [RETAIN], config, progress=False)
    assert plain.history[0].retain_loss == 0.0
    # below the updated range (0), at its first layer (1), inside it (2), at the steered layer (3)
    for layer in range(N_LAYERS):
        model = make_model("llama")
        with random_vector([layer], point=point).apply(model, 3.0, only_non_pad=only_non_pad):
            steered = rmu.unlearn(model, tokenizer, [FORGET], [RETAIN], config, progress=False)
        assert steered.history[0].retain_loss == 0.0, (point, layer)
        assert steered.history[0].forget_norm != plain.history[0].forget_norm  # the steering was on


# -- 3: the cache holds copies -------------------------------------------------------------------------------------
def test_the_cache_keeps_a_copy_when_the_model_edits_a_tensor_in_place() -> None:
    config = tf.FalconConfig(
        hidden_size=D_MODEL, num_hidden_layers=2, num_attention_heads=4, vocab_size=96, parallel_attn=True
    )
    torch.manual_seed(0)
    falcon = tf.AutoModelForCausalLM.from_config(config).eval()
    architecture = ru.Architecture(
        layers_path="transformer.h", mlp_out="mlp", attn_out="self_attention", mlp_down_proj="mlp.dense_4h_to_h"
    )
    ru.register_architecture(falcon, architecture)
    seen: list[Tensor] = []
    ids = torch.randint(3, 90, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), ru.record(falcon, 0, "mlp_out") as cache:
        with ru.attach(falcon, 0, "mlp_out", lambda act, ctx: seen.append(act.clone())):
            falcon(input_ids=ids)  # Falcon then does mlp_output += attention_output, in place
    assert torch.equal(cache[0], seen[0])


def test_recorded_tensors_are_not_the_models_own(llama: nn.Module, batch: dict) -> None:
    kept: list[Tensor] = []
    with torch.no_grad(), ru.record(llama, 1) as cache, ru.attach(llama, 1, "resid_post", lambda a, c: kept.append(a)):
        llama(**batch)
    assert cache[1].data_ptr() != kept[0].data_ptr() and torch.equal(cache[1], kept[0])


# -- 4: negative keys --------------------------------------------------------------------------------------------
def test_negative_and_positive_keys_for_one_layer_both_act(llama: nn.Module, batch: dict) -> None:
    a, b = torch.randn(D_MODEL), torch.randn(D_MODEL)
    vector = ru.ControlVector({-1: a, N_LAYERS - 1: b})
    with torch.no_grad():
        with ru.record(llama, N_LAYERS - 1) as plain:
            llama(**batch)
        with vector.apply(llama, 2.0), ru.record(llama, N_LAYERS - 1) as steered:
            llama(**batch)
        assert torch.allclose(steered[N_LAYERS - 1], plain[N_LAYERS - 1] + 2.0 * (a + b), atol=1e-6)
        with vector.ablate(llama), ru.record(llama, N_LAYERS - 1) as ablated:
            llama(**batch)
    out = ablated[N_LAYERS - 1]
    for direction in (a, b):  # the span of both is projected out, not only one of them
        assert (out @ (direction / direction.norm())).abs().max() < 1e-5


# -- 5: scalars ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scalar", [2, 2.0, np.float32(2), np.float64(2), np.int64(2), torch.tensor(2.0)])
def test_any_real_scalar_scales_a_vector(scalar: object) -> None:
    vector = random_vector([1, 3])
    for scaled in (vector * scalar, scalar * vector if not isinstance(scalar, Tensor) else vector * scalar):
        assert isinstance(scaled, ru.ControlVector)
        assert scaled.layers == [1, 3] and torch.equal(scaled[3], vector[3] * 2.0)
    assert torch.equal((vector / scalar)[1], vector[1] * 0.5)


@pytest.mark.parametrize("bad", ["2", torch.ones(3), [2.0], None, True])
def test_anything_else_is_refused_clearly(bad: object) -> None:
    with pytest.raises(TypeError, match="real scalar"):
        random_vector([1]) * bad
    with pytest.raises(TypeError):  # at test time beartype may refuse it first, by the annotation
        random_vector([1]).apply(make_model("llama"), bad)  # type: ignore[arg-type]


# -- 6: the attention mask wherever the pass enters ----------------------------------------------------------------
def test_the_mask_is_known_when_the_base_model_is_called(llama: nn.Module, batch: dict) -> None:
    with torch.no_grad(), ru.record(llama, 1) as cache:
        llama.model(**batch)
    assert torch.equal(cache.attention_mask, batch["attention_mask"])
    real = batch["attention_mask"].bool()
    expected = torch.stack([cache[1][i][real[i]].mean(0) for i in range(3)])
    assert torch.allclose(cache.pooled("mean")[1], expected, atol=1e-6)


def test_a_mask_never_outlives_its_pass(llama: nn.Module, batch: dict) -> None:
    masks: list[Tensor | None] = []
    with torch.no_grad(), ru.attach(llama, 0, "resid_post", lambda act, ctx: masks.append(ctx.attention_mask)):
        llama(**batch)
        llama.model(input_ids=batch["input_ids"])  # no mask this time: none, not the previous one
        llama(input_ids=batch["input_ids"])
    assert torch.equal(masks[0], batch["attention_mask"]) and masks[1] is None and masks[2] is None


def test_a_pass_entering_below_the_model_warns_that_the_mask_is_unknown(llama: nn.Module, batch: dict) -> None:
    hidden = torch.randn(1, 3, D_MODEL)
    embeddings = llama.model.rotary_emb(hidden, torch.arange(3)[None])
    with ru.record(llama, 0), pytest.warns(UserWarning, match="attention mask is unknown"):
        ru.decoder_layers(llama)[0](hidden, position_embeddings=embeddings)


# -- 7: shapes and dtypes at the hook ------------------------------------------------------------------------------
def test_a_flattened_activation_is_refused_at_the_hook_naming_the_module() -> None:
    config = tf.OPTConfig(
        hidden_size=D_MODEL, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, vocab_size=96,
        word_embed_proj_dim=D_MODEL, max_position_embeddings=64,
    )  # fmt: skip
    opt = tf.AutoModelForCausalLM.from_config(config).eval()
    ru.register_architecture(opt, ru.Architecture(layers_path="model.decoder.layers", mlp_out="fc2"))
    with pytest.raises(ru.ShapeError, match=r"model\.decoder\.layers\.0\.fc2.*\(10, 32\).*\[batch pos d_model=32\]"):
        with torch.no_grad(), ru.record(opt, 0, "mlp_out"):
            opt(input_ids=torch.randint(3, 90, (2, 5)))


def test_a_hook_returning_float32_into_a_bf16_model_is_cast_back(llama: nn.Module, batch: dict) -> None:
    llama = llama.to(torch.bfloat16)
    with torch.no_grad(), ru.attach(llama, 1, "resid_post", lambda act, ctx: act.float() + 1.0):
        with ru.record(llama, [1, 2], dtype=None) as cache:
            llama(**batch)
    assert cache[1].dtype == torch.bfloat16 and cache[2].dtype == torch.bfloat16


# -- 8: smaller ones -------------------------------------------------------------------------------------------------
def test_zero_directions_are_refused(llama: nn.Module) -> None:
    with pytest.raises(ru.ShapeError, match="layer 2 has norm 0"):
        ru.ControlVector({1: torch.ones(D_MODEL), 2: torch.zeros(D_MODEL)}).normalized()
    with pytest.raises(ru.ShapeError, match="norm 0"):
        ru.ablate_direction(llama, torch.zeros(D_MODEL), [1])
    with pytest.raises(ru.ShapeError, match="norm 0"):
        ru.ControlVector({1: torch.zeros(D_MODEL)}).ablate(llama)


def test_an_empty_layer_list_is_a_clear_error(llama: nn.Module) -> None:
    with pytest.raises(ru.LayerNotFoundError, match="no layer selected"):
        with ru.record(llama, layers=[]):
            pass


def test_a_users_except_exception_cannot_swallow_the_early_stop(llama: nn.Module, batch: dict) -> None:
    swallowed = False
    with torch.no_grad(), ru.record(llama, 1, stop_after=True) as cache:
        try:
            llama(**batch)
        except Exception:
            swallowed = True
    assert not swallowed and cache[1].shape == (3, 7, D_MODEL)


UNCHECKED = """
import torch, transformers as tf, repe_unlearn as ru
model = tf.LlamaForCausalLM(tf.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, intermediate_size=64, vocab_size=96, head_dim=8))
for attempt in (lambda: ru.record(model, 1, point="bad").__enter__(),
                lambda: ru.ControlVector({1: torch.ones(32)}, point="bad"),
                lambda: ru.ablate_direction(model, torch.ones(32), 1, point="bad")):
    try:
        attempt()
    except ru.HookPointError as exc:
        print("HookPointError:", exc)
try:
    ru.ControlVector({1: torch.ones(32)}).apply(model, "2")
except TypeError as exc:
    print("TypeError:", exc)
for attempt in (lambda: ru.ControlVector({1.5: torch.ones(32)}), lambda: ru.ControlVector({"x": torch.ones(32)}),
                lambda: ru.attach(model, 1.5, "resid_post", lambda a, c: None),
                lambda: ru.collect(model, {"input_ids": torch.ones(1, 2, dtype=torch.long)}, 1.0)):
    try:
        attempt()
    except ru.LayerNotFoundError as exc:
        print("LayerNotFoundError:", exc)
"""


def test_an_unknown_point_is_a_hook_point_error_without_test_time_type_checks() -> None:
    import subprocess
    import sys

    # beartype refuses a bad Literal at test time; what users meet is the package's own check
    out = subprocess.run([sys.executable, "-c", UNCHECKED], capture_output=True, text=True, check=True).stdout
    assert out.count("HookPointError: unknown hook point 'bad'") == 3
    assert "TypeError: a ControlVector can be scaled by a real scalar" in out
    assert out.count("LayerNotFoundError:") == 4  # float and str layers, never truncated to ints


# -- devices --------------------------------------------------------------------------------------------------------
def meta_model() -> nn.Module:
    """A model on the meta device (shapes only), which the CPU inputs of the tests are not on."""
    config = make_config("llama")
    config._attn_implementation = "eager"  # sdpa's mask check reads values, which meta tensors lack
    return tf.AutoModelForCausalLM.from_config(config).to("meta")


def test_record_and_collect_move_inputs_to_the_embeddings_device(batch: dict) -> None:
    model = meta_model()
    assert ru.input_device(model).type == "meta"
    cache = ru.collect(model, batch, 1, keep_graph=True)
    assert cache[1].device.type == "meta" and cache[1].shape == (3, 7, D_MODEL)
    assert cache.attention_mask is not None and cache.attention_mask.device.type == "meta"
    with ru.record(model, 1, keep_graph=True) as recorded:
        model(**batch)
    assert recorded[1].device.type == "meta"


def test_rmu_targets_and_empty_shards_live_where_they_are_used(batch: dict) -> None:
    from repe_unlearn import rmu
    from repe_unlearn.rmu import trainer

    model = meta_model()
    config = rmu.RMUConfig(layer=2, steering_coeff=(5.0,), alpha=(1.0,), reference_mode=True)
    replay = trainer._FrozenReplay(model, [], 2, 2)
    loss, h, _ = trainer._forget_loss(model, batch, replay, torch.ones(D_MODEL), config)  # the target is on the CPU
    assert loss.device.type == "meta" and h.device.type == "meta"
    empty = {k: v[:0] for k, v in batch.items()}
    zero, _, _ = trainer._forget_loss(model, empty, replay, torch.ones(D_MODEL), config)
    assert zero.device.type == "meta"


def test_collectives_run_on_the_process_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from repe_unlearn import _distributed as distributed

    seen: list[torch.device] = []

    class Reduced(Exception):
        pass

    def fake_all_reduce(tensor: Tensor, op: object = None) -> None:
        seen.append(tensor.device)
        raise Reduced  # a meta tensor cannot be copied back; the device it was sent on is what matters

    monkeypatch.setattr(distributed, "world", lambda: (0, 2))
    monkeypatch.setattr(distributed, "collective_device", lambda: torch.device("meta"))
    monkeypatch.setattr(distributed.dist, "all_reduce", fake_all_reduce)
    with pytest.raises(Reduced):
        distributed.all_reduce_sum(torch.tensor([1.0, 2.0]))  # accuracy sums and losses start on the CPU
    assert seen == [torch.device("meta")]


def test_an_rmu_target_given_under_a_negative_key_is_found(tokenizer) -> None:
    from conftest import FORGET, RETAIN

    from repe_unlearn import rmu

    config = rmu.RMUConfig(layer=N_LAYERS - 1, steering_coeff=(5.0,), alpha=(1.0,), batch_size=4, max_batches=1)
    u = torch.rand(D_MODEL)
    result = rmu.unlearn(
        make_model("llama"), tokenizer, [FORGET], [RETAIN], config, control_vectors=[ru.ControlVector({-1: u})],
        progress=False,
    )  # fmt: skip
    assert torch.allclose(result.directions[0], u / u.norm())


# -- found by an outside tester after the redesign -------------------------------------------------------------
def test_a_pass_run_from_inside_a_hook_keeps_the_outer_mask(llama: nn.Module, batch: dict) -> None:
    short = {"input_ids": batch["input_ids"], "attention_mask": torch.ones_like(batch["attention_mask"])}
    vector = random_vector([2])
    with torch.no_grad(), vector.apply(llama, 1.0, only_non_pad=True):
        expected = llama(**batch).logits
    busy, seen = [False], []

    def probe(act: Tensor, ctx: ru.HookContext) -> None:
        if not busy[0]:
            busy[0] = True
            llama(**short)  # an inner pass with another mask, from inside the outer one
            busy[0] = False

    with torch.no_grad(), ru.Intervention(llama, [0], "resid_post", probe), vector.apply(llama, 1.0, only_non_pad=True):
        with ru.attach(llama, 3, "resid_post", lambda act, ctx: seen.append(ctx.attention_mask)):
            got = llama(**batch).logits
    assert torch.equal(got, expected)
    assert torch.equal(seen[-1], batch["attention_mask"])  # the outer pass's last hook saw its own mask


def test_an_intervention_for_another_model_is_refused(llama: nn.Module, tokenizer) -> None:
    other = make_model("llama")
    with pytest.raises(ru.ConfigError, match="another model"):
        evaluate_mcq(llama, tokenizer, ITEMS, format="cloze", intervention=random_vector([1]).apply(other, 30.0))
    base_only = random_vector([1]).apply(llama.model, 30.0)  # the base model is part of the evaluated one
    assert scores(llama, tokenizer, intervention=base_only) != scores(llama, tokenizer)
    assert ru.active_hooks(other) == [] and ru.active_hooks(llama.model) == []


def test_an_intervention_cannot_be_attached_twice(llama: nn.Module) -> None:
    iv = random_vector([1]).apply(llama)
    handle = iv.attach()
    with pytest.raises(ru.ConfigError, match="twice"):
        iv.attach()
    with pytest.raises(ru.ConfigError, match="twice"):
        with iv:
            pass
    with handle:
        with pytest.raises(ru.HookPointError, match="already inside"):
            with handle:
                pass
    assert not iv.active
    with iv:  # usable again once its hooks are gone
        assert iv.active


def test_a_vector_keeps_its_own_copy(llama: nn.Module, batch: dict) -> None:
    t = torch.randn(D_MODEL)
    vector = ru.ControlVector({1: t})
    iv = vector.apply(llama, 1.0)
    with iv:
        before = logits(llama, batch)
    t.mul_(100)
    with iv:
        assert torch.equal(logits(llama, batch), before)
    assert vector[1].data_ptr() != t.data_ptr()


def test_a_bool_layer_key_is_refused() -> None:
    with pytest.raises(ru.LayerNotFoundError, match="ints"):
        ru.ControlVector({True: torch.ones(D_MODEL)})  # float and str keys: see the unchecked test above


def test_non_finite_steering_is_refused(llama: nn.Module) -> None:
    vector = random_vector([1])
    with pytest.raises(ru.ConfigError, match="finite"):
        vector.apply(llama, float("nan"))
    with pytest.raises(ru.ConfigError, match="finite"):
        vector * float("inf")
    with pytest.raises(ru.ShapeError, match="NaN"):
        ru.ControlVector({1: torch.full((D_MODEL,), float("nan"))})
    assert torch.equal((vector * np.array(2.0))[1], vector[1] * 2.0)  # a 0-d numpy array is a scalar too


def test_a_zero_contrastive_vector_warns(llama: nn.Module, tokenizer) -> None:
    prompts = ["the cat sat on the mat", "a dog ran in the park"]
    with pytest.warns(UserWarning, match="zero"):
        ru.ControlVector.from_contrastive(llama, tokenizer, prompts, prompts, layers=[2])


def test_items_built_in_python_are_checked(llama: nn.Module, tokenizer) -> None:
    for bad in (MCQItem("q", ("a", "b"), 5), MCQItem("q", ("a", "b"), -1), MCQItem("q", (), 0)):
        with pytest.raises(ru.DataError, match="item 0"):
            evaluate_mcq(llama, tokenizer, [bad], format="cloze")
