from pathlib import Path

import pytest
import torch
from conftest import N_LAYERS
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import repe_unlearn as ru


def test_record_equals_output_hidden_states(model: nn.Module, batch: dict[str, Tensor]) -> None:
    with torch.no_grad(), ru.record(model) as cache:
        hidden = model(**batch, output_hidden_states=True).hidden_states
    assert cache.layers == list(range(N_LAYERS))
    for layer in range(N_LAYERS - 1):  # the last entry of hidden_states has the final norm applied
        assert torch.equal(cache[layer], hidden[layer + 1])
    assert torch.equal(cache[-2], hidden[-2])
    assert cache[0].shape == (3, 7, 32)


def test_last_layer_equals_a_plain_torch_hook(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    seen = {}
    handle = ru.decoder_layers(llama)[-1].register_forward_hook(lambda m, a, o: seen.setdefault("out", o))
    with torch.no_grad(), ru.record(llama, layers=-1) as cache:
        llama(**batch)
    handle.remove()
    assert torch.equal(cache[N_LAYERS - 1], seen["out"])
    assert torch.equal(llama.model.norm(cache[-1]), llama(**batch, output_hidden_states=True).hidden_states[-1])


def test_early_stop_gives_the_same_activations_and_skips_the_rest(model: nn.Module, batch: dict[str, Tensor]) -> None:
    with torch.no_grad(), ru.record(model, layers=[0, 1]) as full:
        model(**batch)
    calls: list[str] = []
    later = ru.decoder_layers(model)[2].register_forward_hook(lambda m, a, o: calls.append("layer 2"))
    head = model.get_output_embeddings().register_forward_hook(lambda m, a, o: calls.append("lm_head"))
    with torch.no_grad(), ru.record(model, layers=[0, 1], stop_after=True) as early:
        model(**batch)
        calls.append("unreachable")
    later.remove()
    head.remove()
    assert calls == []
    assert all(torch.equal(full[k], early[k]) for k in (0, 1))
    assert ru.active_hooks(model) == []
    # the model still runs whole afterwards, hidden states and all
    out = model(**batch, output_hidden_states=True)
    assert torch.equal(out.hidden_states[1], full[0])


def test_early_stop_at_resid_pre_does_not_run_that_layer(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    calls: list[int] = []
    hook = ru.decoder_layers(llama)[1].register_forward_hook(lambda m, a, o: calls.append(1))
    cache = ru.collect(llama, batch, layers=1, point="resid_pre")
    hook.remove()
    assert calls == []
    assert torch.equal(cache[1], llama(**batch, output_hidden_states=True).hidden_states[1])


def test_an_early_stop_not_ours_propagates(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    from repe_unlearn._cache import _StopForward

    with ru.record(llama, layers=0, stop_after=True) as outer:
        with pytest.raises(_StopForward), ru.record(llama, layers=1):
            raise _StopForward(object())
    assert len(outer) == 0


def test_cache_holds_the_last_pass(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    with torch.no_grad(), ru.record(llama, layers=[1]) as cache:
        llama(**batch)
        llama(input_ids=batch["input_ids"][:1, :4])
    assert cache[1].shape == (1, 4, 32)
    assert cache.attention_mask is None


def test_keep_graph_trains_through_the_cache(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    weight = ru.mlp_down_proj(llama, 1).weight
    cache = ru.collect(llama, batch, layers=2, keep_graph=True)
    assert cache[2].requires_grad
    cache[2].square().mean().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_default_cache_is_detached_on_cpu_and_can_be_float16(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    with ru.record(llama, layers=1, dtype=torch.float16) as cache:
        llama(**batch)
    assert not cache[1].requires_grad and cache[1].device.type == "cpu" and cache[1].dtype == torch.float16
    with pytest.raises(ru.ConfigError, match="keep_graph"):
        with ru.record(llama, keep_graph=True, dtype=torch.float16):
            pass


def test_mask_is_stored_and_pooling_picks_real_tokens(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    cache = ru.collect(llama, batch, layers=[0, 3])
    assert cache.attention_mask is not None and torch.equal(cache.attention_mask, batch["attention_mask"])
    last = cache.pooled("last")[3]
    assert torch.equal(last[0], cache[3][0, 6])  # full row
    assert torch.equal(last[1], cache[3][1, 4])  # right-padded after position 4
    assert torch.equal(last[2], cache[3][2, 6])  # left-padded
    mean = cache.pooled("mean")[0]
    torch.testing.assert_close(mean[1], cache[0][1, :5].mean(0))
    torch.testing.assert_close(mean[2], cache[0][2, 2:].mean(0))
    with pytest.raises(ru.ConfigError, match="unknown pooling 'max'"):
        cache.pooled("max")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 5)), min_size=1, max_size=4))
def test_last_token_matches_a_loop_for_any_padding(rows: list[tuple[int, int]]) -> None:
    width = 9
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (start, length) in enumerate(rows):
        mask[i, start : start + length] = 1
    acts = torch.randn(len(rows), width, 4)
    expected = torch.stack([acts[i, start + length - 1] for i, (start, length) in enumerate(rows)])
    assert torch.equal(ru.last_token(acts, mask), expected)


def test_collect_pooled_streams_batches(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    halves = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    pooled = ru.collect_pooled(llama, halves, layers=[1, 2], pool="mean")
    whole = ru.collect(llama, batch, layers=[1, 2]).pooled("mean")
    for layer in (1, 2):
        torch.testing.assert_close(pooled[layer], whole[layer])
    assert pooled[1].shape == (3, 32)


def test_save_load_round_trip_is_exact(llama: nn.Module, batch: dict[str, Tensor], tmp_path: Path) -> None:
    cache = ru.collect(llama, batch, layers=[0, 2])
    cache.save(tmp_path / "acts.safetensors")
    loaded = ru.ActivationCache.load(tmp_path / "acts.safetensors")
    assert loaded.layers == [0, 2] and loaded.point == "resid_post"
    assert all(torch.equal(loaded[k], cache[k]) for k in (0, 2))
    assert loaded.attention_mask is not None and torch.equal(loaded.attention_mask, batch["attention_mask"])
    assert loaded.metadata["model"] == "LlamaForCausalLM" and loaded[-2].shape == cache[2].shape
    with pytest.raises(FileExistsError, match="overwrite"):
        cache.save(tmp_path / "acts.safetensors")


def test_cache_errors_name_the_layer(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    empty = ru.ActivationCache()
    with pytest.raises(ru.LayerNotFoundError, match="cache is empty"):
        empty[0]
    cache = ru.collect(llama, batch, layers=[1])
    with pytest.raises(ru.LayerNotFoundError, match=r"layer 2 is not in this cache; it holds layers \[1\]"):
        cache[2]
    assert 1 in cache and 2 not in cache


def test_repr_is_readable(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    text = repr(ru.collect(llama, batch))
    assert text == (
        "ActivationCache(model='LlamaForCausalLM', point='resid_post', layers=0..3, shape=[3, 7, 32], "
        "dtype=float32, device=cpu, mask=yes)"
    )
