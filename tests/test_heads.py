"""Per-head hook points: ``attn_heads`` (each head's output before the output projection mixes them) and
``attn_pattern`` (the attention weights), on every supported architecture."""

import copy

import pytest
import torch
from conftest import ARCHS, N_LAYERS, make_model
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

import repe_unlearn as ru
from repe_unlearn._models import architecture
from repe_unlearn._vectors import _check_point as check_point

N_HEADS, D_HEAD = 4, 8  # the conftest configs


def eager(arch: str, seed: int = 0) -> nn.Module:
    model = make_model(arch, seed)
    model.set_attn_implementation("eager")
    return model


def o_proj(model: nn.Module, layer: int) -> nn.Module:
    module = ru.decoder_layers(model)[layer]
    for part in architecture(model).attn_o_proj.split("."):
        module = getattr(module, part)
    return module


def head_columns(proj: nn.Module, head: int) -> Tensor:
    """The output projection's weights that read head ``head``: ``[d_model d_head]``."""
    cols = slice(head * D_HEAD, (head + 1) * D_HEAD)
    return proj.weight[cols].T if isinstance(proj, Conv1D) else proj.weight[:, cols]  # Conv1D is [in out]


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_head_outputs_are_the_projection_input_split_by_head(arch: str, batch: dict) -> None:
    model = make_model(arch)
    proj = o_proj(model, 2)
    seen: dict[str, Tensor] = {}
    handles = [
        proj.register_forward_pre_hook(lambda m, args: seen.__setitem__("in", args[0].clone())),
        proj.register_forward_hook(lambda m, args, out: seen.__setitem__("out", out.clone())),
    ]
    with ru.record(model, [1, 2], "attn_heads") as cache:
        model(**batch)
    for handle in handles:
        handle.remove()
    z = cache[2]
    assert z.shape == (3, 7, N_HEADS, D_HEAD) and cache.point == "attn_heads"
    assert torch.equal(z.flatten(-2), seen["in"])
    # each head's slice times the projection columns that read it, summed over heads, is the projection's output
    per_head = torch.stack([z[:, :, h] @ head_columns(proj, h).T for h in range(N_HEADS)], dim=2)
    bias = proj.bias if getattr(proj, "bias", None) is not None else 0.0
    assert torch.allclose(per_head.sum(dim=2) + bias, seen["out"], atol=1e-5)
    assert torch.equal(cache.attention_mask, batch["attention_mask"])


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_patterns_equal_the_attentions_transformers_returns(arch: str, batch: dict) -> None:
    model = eager(arch)
    with ru.record(model, None, "attn_pattern") as cache:
        out = model(**batch, output_attentions=True)
    for layer in range(N_LAYERS):
        assert torch.equal(cache[layer], out.attentions[layer])
    pattern = cache[0]
    assert pattern.shape == (3, N_HEADS, 7, 7)
    real_rows = batch["attention_mask"].bool()[:, None, :, None].expand_as(pattern)
    sums = pattern.sum(dim=-1)
    assert torch.allclose(sums[real_rows[..., 0]], torch.ones(()), atol=1e-5)  # every real query sums to one
    assert torch.all(pattern.triu(diagonal=1)[real_rows] == 0)  # causal: no real query sees a later key


@torch.no_grad()
def test_a_head_is_its_pattern_times_its_values(batch: dict) -> None:
    """The two head points agree: z_h = A_h V_h, with grouped-query heads sharing a value head (llama)."""
    model = eager("llama")
    attn = model.model.layers[1].self_attn
    values: dict[str, Tensor] = {}
    handle = attn.v_proj.register_forward_hook(lambda m, a, out: values.__setitem__("v", out.clone()))
    with ru.record(model, 1, "attn_heads") as z, ru.record(model, 1, "attn_pattern") as a:
        model(**batch)
    handle.remove()
    n_kv = model.config.num_key_value_heads
    v = values["v"].unflatten(-1, (n_kv, D_HEAD))  # [batch key kv_head d_head]
    for h in range(N_HEADS):
        expected = a[1][:, h] @ v[:, :, h // (N_HEADS // n_kv)]
        assert torch.allclose(z[1][:, :, h], expected, atol=1e-5)


def test_patterns_need_eager_attention(batch: dict) -> None:
    model = make_model("llama")
    model.set_attn_implementation("sdpa")
    with pytest.raises(ru.HookPointError, match="attn_implementation='eager'"):
        with torch.no_grad(), ru.record(model, 0, "attn_pattern"):
            model(**batch)
    assert ru.active_hooks(model) == []


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "gemma2"])
@torch.no_grad()
def test_ablating_a_head_equals_zeroing_its_projection_columns(arch: str, batch: dict) -> None:
    model = make_model(arch)
    edited = copy.deepcopy(model)
    head_columns(o_proj(edited, 1), 2).zero_()  # a view: zeroes the weights that read head 2 of layer 1
    head_columns(o_proj(edited, 3), 0).zero_()
    ablation = ru.ablate_heads(model, {1: 2, -1: [0]})
    with ablation:
        ablated = model(**batch).logits
    assert torch.allclose(ablated, edited(**batch).logits, atol=1e-6)
    assert not torch.allclose(ablated, model(**batch).logits, atol=1e-3)  # the ablation does something
    # in the last layer nothing reads what other positions' heads wrote: ablating there at the last token only
    # changes the last token's logits, exactly as ablating everywhere does
    with ru.ablate_heads(model, {-1: 0}, positions="last"):
        last_only = model(**batch).logits
    with ru.ablate_heads(model, {-1: 0}):
        everywhere = model(**batch).logits
    plain = model(**batch).logits
    assert torch.equal(last_only[0, :-1], plain[0, :-1])  # row 0 has no padding: its last token is the last
    assert torch.equal(last_only[0, -1], everywhere[0, -1]) and not torch.equal(last_only[0, -1], plain[0, -1])
    for bad in ({1: 4}, {1: []}, {}, {1: True}):
        with pytest.raises(ru.ConfigError, match="heads"):
            ru.ablate_heads(model, bad)
    with pytest.raises(ru.LayerNotFoundError):
        ru.ablate_heads(model, {N_LAYERS: 0})


@torch.no_grad()
def test_patching_one_head_moves_that_head_only(batch: dict) -> None:
    model = make_model("qwen2")
    clean = {"input_ids": batch["input_ids"][:1]}
    corrupted = {"input_ids": batch["input_ids"][2:3].clamp(min=3)}
    _, cache = ru.run_with_cache(model, clean, 2, "attn_heads")
    with ru.patch(model, cache, heads=[1]), ru.record(model, 2, "attn_heads") as patched:
        model(**corrupted)
    with ru.record(model, 2, "attn_heads") as plain:
        model(**corrupted)
    assert torch.equal(patched[2][:, :, 1], cache[2][:, :, 1])
    others = [0, 2, 3]
    assert torch.equal(patched[2][:, :, others], plain[2][:, :, others])
    with ru.patch(model, cache, heads=range(N_HEADS)):
        every_head = model(**corrupted).logits
    with ru.patch(model, cache):
        whole = model(**corrupted).logits
    assert torch.equal(every_head, whole)
    with pytest.raises(ru.ConfigError, match="attn_heads"):
        ru.patch(model, ru.run_with_cache(model, clean, 2)[1], heads=0)  # a residual cache has no heads


@torch.no_grad()
def test_patching_sweep_over_heads(batch: dict) -> None:
    model = make_model("llama")
    clean = {"input_ids": batch["input_ids"][:1]}
    corrupted = {"input_ids": batch["input_ids"][1:2].clamp(min=3)}
    answer = int(model(**clean).logits[0, -1].argmax())

    def metric(logits: Tensor) -> Tensor:
        return logits[0, -1, answer]

    sweep = ru.patching_sweep(model, clean, corrupted, metric, over="heads")
    assert sweep.over == "heads" and sweep.effects.shape == (N_LAYERS, N_HEADS)
    _, cache = ru.run_with_cache(model, clean, None, "attn_heads")

    def head_from_clean(layer: int, head: int):  # written out by hand, independent of ru.patch
        def replace(act: Tensor, ctx: ru.HookContext) -> Tensor:
            out = act.clone()
            out[:, :, head] = cache[layer][:, :, head]
            return out

        return ru.Intervention(model, layer, "attn_heads", replace)

    for layer, head in [(0, 0), (2, 3), (3, 1)]:
        with head_from_clean(layer, head):
            assert float(sweep.raw[layer, head]) == float(metric(model(**corrupted).logits))
    with pytest.raises(ru.ConfigError, match="attn_heads"):
        ru.patching_sweep(model, clean, corrupted, metric, over="heads", point="mlp_out")


@torch.no_grad()
def test_generation_caches_heads_and_patterns_step_by_step(batch: dict) -> None:
    model = eager("llama")
    prompt = {"input_ids": batch["input_ids"][:1], "attention_mask": torch.ones(1, 7, dtype=torch.long)}
    with (
        ru.record(model, 2, "attn_heads", every_pass=True) as z,
        ru.record(model, 2, "attn_pattern", every_pass=True) as a,
    ):
        generated = model.generate(**prompt, max_new_tokens=4, min_new_tokens=2, do_sample=False, pad_token_id=0)
    n = generated.shape[1] - 1  # the last token is never run
    assert [step[2].shape[2] for step in a.steps] == [7] + [1] * (n - 7)  # queries: the prompt, then one per token
    assert a[2].shape == (1, N_HEADS, n, n) and z[2].shape == (1, n, N_HEADS, D_HEAD)
    with ru.record(model, 2, "attn_heads") as z_full, ru.record(model, 2, "attn_pattern") as a_full:
        model(input_ids=generated[:, :-1])
    assert torch.allclose(z[2], z_full[2], atol=1e-5)
    assert torch.allclose(a[2], a_full[2], atol=1e-5)  # keys padded with zeros = the causal zeros of one pass


@torch.no_grad()
def test_head_caches_pool_save_and_load(tmp_path, batch: dict) -> None:
    model = eager("gpt2")
    _, caches = ru.run_with_cache(model, batch, [0, 3], ["attn_heads", "attn_pattern"])
    heads, patterns = caches["attn_heads"], caches["attn_pattern"]
    pooled = heads.pooled("mean")[3]
    assert pooled.shape == (3, N_HEADS, D_HEAD)
    assert torch.allclose(pooled.flatten(1), ru.masked_mean(heads[3].flatten(2), batch["attention_mask"]))
    assert torch.equal(heads.pooled("last")[0][2], heads[0][2, -1])  # left-padded row: its last token is last
    with pytest.raises(ru.ConfigError, match="pooling"):
        patterns.pooled()
    for cache in (heads, patterns):
        cache.save(tmp_path / f"{cache.point}.safetensors")
        back = ru.ActivationCache.load(tmp_path / f"{cache.point}.safetensors")
        assert back.point == cache.point and all(torch.equal(back[k], cache[k]) for k in cache.layers)


def test_head_points_refuse_what_they_cannot_do(batch: dict) -> None:
    model = eager("llama")
    with pytest.raises(ru.HookPointError, match="read-only"):
        with torch.no_grad(), ru.Intervention(model, 1, "attn_pattern", lambda act, ctx: act * 0):
            model(**batch)
    with pytest.raises(ru.HookPointError, match="residual stream"):  # what ControlVector and ablate_direction run
        check_point("attn_heads")  # (called directly: the test-time type checker would refuse the Literal first)
    _, patterns = ru.run_with_cache(model, batch, 1, "attn_pattern")
    with pytest.raises(ru.ConfigError, match="read-only"):
        ru.patch(model, patterns)
    with pytest.raises(ru.ShapeError, match=r"\(3, 7, 4, 8\)"):
        with torch.no_grad(), ru.Intervention(model, 1, "attn_heads", lambda act, ctx: act.flatten(-2)):
            model(**batch)
    assert ru.active_hooks(model) == []


@torch.no_grad()
def test_editing_heads_through_an_intervention_changes_the_write(batch: dict) -> None:
    """Doubling every head equals doubling the projection's input: attn_out changes by the projection again."""
    model = make_model("mistral")

    def double(act: Tensor, ctx: ru.HookContext) -> Tensor:
        assert act.shape[2:] == (N_HEADS, D_HEAD) and ctx.point == "attn_heads" and ctx.layer == 0
        return act * 2

    with ru.record(model, 0, "attn_out") as plain:
        model(**batch)
    with ru.Intervention(model, 0, "attn_heads", double), ru.record(model, 0, "attn_out") as doubled:
        model(**batch)
    assert torch.allclose(doubled[0], 2 * plain[0], atol=1e-5)  # o_proj is linear without bias in mistral


def test_the_docs_table_names_the_modules_hooked() -> None:
    """docs/intervention-layer.md lists, per architecture, the modules the head points hook: keep it true."""
    from pathlib import Path

    from repe_unlearn._models import hook_module, module_name

    text = (Path(__file__).parents[1] / "docs" / "intervention-layer.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and "`" in cells[1] and cells[0] not in ("model_type", "point"):
            for model_type in cells[0].split(", "):
                rows[model_type] = (cells[1].split("`")[1], cells[2].split("`")[1])
    assert set(ARCHS) <= set(rows)
    for arch in ARCHS:
        model = make_model(arch)
        block = module_name(model, ru.decoder_layers(model)[0]) + "."
        found = tuple(module_name(model, hook_module(model, 0, p)[0]).removeprefix(block) for p in ru.HEAD_POINTS)
        assert found == rows[arch], arch


# -- found by an outside tester ----------------------------------------------------------------------------------
@torch.no_grad()
def test_generation_patterns_of_sliding_window_layers_sit_on_their_keys() -> None:
    """A sliding-window layer's decode step sees only the window's last keys: they are right-aligned."""
    import transformers as tf

    config = tf.MistralConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        vocab_size=96, sliding_window=4, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    prompt = torch.randint(3, 96, (1, 7))
    with ru.record(model, 0, "attn_pattern", every_pass=True) as cache:
        generated = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=3, do_sample=False, pad_token_id=0,
            eos_token_id=None,
        )  # fmt: skip
    whole = model(generated[:, :-1], output_attentions=True).attentions[0]
    assert cache[0].shape == whole.shape == (1, N_HEADS, 9, 9)
    assert torch.allclose(cache[0], whole, atol=1e-5)


def test_heads_of_one_layer_named_twice_are_all_ablated(batch: dict) -> None:
    import numpy as np

    model = make_model("llama")
    with torch.no_grad(), ru.ablate_heads(model, {1: [1], -3: [2]}):
        twice = model(**batch).logits
    with torch.no_grad(), ru.ablate_heads(model, {1: [1, 2]}):
        once = model(**batch).logits
    assert torch.equal(twice, once)
    with torch.no_grad(), ru.ablate_heads(model, {np.int64(1): np.int64(2)}):  # numpy integers are indices too
        numpy_keys = model(**batch).logits
    with torch.no_grad(), ru.ablate_heads(model, {1: 2}):
        assert torch.equal(numpy_keys, model(**batch).logits)


@torch.no_grad()
def test_non_pad_positions_at_head_points(batch: dict) -> None:
    model = make_model("qwen3")
    with ru.record(model, 2, "attn_heads") as plain:
        model(**batch)
    with ru.ablate_heads(model, {2: 0}, positions="non-pad"), ru.record(model, 2, "attn_heads") as ablated:
        model(**batch)
    real = batch["attention_mask"].bool()
    assert torch.all(ablated[2][:, :, 0][real] == 0)  # head 0 is zero at every real position
    assert torch.equal(ablated[2][:, :, 0][~real], plain[2][:, :, 0][~real])  # and untouched at padding
    assert torch.equal(ablated[2][:, :, 1:], plain[2][:, :, 1:])
    _, cache = ru.run_with_cache(model, batch, 2, "attn_heads")
    with ru.patch(model, cache, positions="non-pad", heads=1):
        model(**batch)


@torch.no_grad()
def test_int_positions_count_the_whole_sequence_during_generation(batch: dict) -> None:
    model = make_model("llama")
    vector = ru.ControlVector({1: torch.randn(32)})
    prompt = {"input_ids": batch["input_ids"][:1], "attention_mask": torch.ones(1, 7, dtype=torch.long)}
    with vector.apply(model, 3.0, positions=5), ru.record(model, 3, every_pass=True) as stepped:
        generated = model.generate(**prompt, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
    with vector.apply(model, 3.0, positions=5), ru.record(model, 3) as whole:
        model(input_ids=generated[:, :-1])
    assert stepped[3].shape == whole[3].shape == (1, 9, 32)
    assert torch.allclose(stepped[3], whole[3], atol=1e-5)  # the new tokens (positions 7, 8) are steered too


def test_names_filter_takes_names_and_lists(batch: dict) -> None:
    model = make_model("gpt2")
    _, one = ru.run_with_cache(model, batch, None, "resid_post", names_filter="resid_post.2")
    _, some = ru.run_with_cache(model, batch, None, "resid_post", names_filter=["resid_post.1", "resid_post.3"])
    assert one.layers == [2] and some.layers == [1, 3]
    with pytest.raises(ru.ConfigError, match="names_filter kept no hook"):
        ru.run_with_cache(model, batch, None, "resid_post", names_filter=["resid_pre.1"])


def test_refusals_found_by_an_outside_tester(batch: dict) -> None:
    model = eager("llama")
    clean = {"input_ids": batch["input_ids"][:1]}
    corrupted = {"input_ids": batch["input_ids"][1:2].clamp(min=3)}
    with pytest.raises(ru.ConfigError, match="attn_heads"):  # an explicit point is never ignored
        ru.patching_sweep(model, clean, corrupted, lambda logits: logits[0, -1, 5], over="heads", point="resid_post")
    with pytest.raises(ru.ConfigError, match="one number"):
        ru.patching_sweep(model, clean, corrupted, lambda logits: logits[0, -1])
    def zero_in_place(act: Tensor, ctx: ru.HookContext) -> None:
        act.zero_()

    with pytest.raises(ru.HookPointError, match="in place"):
        with torch.no_grad(), ru.Intervention(model, 1, "attn_pattern", zero_in_place):
            model(**batch)
    with pytest.raises(ru.ShapeError, match="different batch sizes"):
        with torch.no_grad(), ru.record(model, 1, every_pass=True):
            model(**batch)
            model(**clean)
    with pytest.raises(ru.ShapeError, match="4 dimensions"):
        ru.ActivationCache({0: torch.zeros(2, 3, 32)}, point="attn_heads")
    with pytest.raises(ru.ShapeError, match="batch sizes"):
        ru.ActivationCache({0: torch.zeros(2, 3, 32), 1: torch.zeros(1, 3, 32)})
    with pytest.raises(ru.ShapeError, match="attention mask"):
        ru.ActivationCache({0: torch.zeros(2, 3, 32)}, attention_mask=torch.ones(2, 4))
    assert ru.active_hooks(model) == []
