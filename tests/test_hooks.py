import pytest
import torch
from conftest import N_LAYERS
from torch import Tensor, nn

import repe_unlearn as ru
from repe_unlearn._hooks import HookContext


def run(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    with torch.no_grad():
        return model(**batch).logits


def test_hook_points_sum_to_the_residual_update(model: nn.Module, batch: dict[str, Tensor]) -> None:
    """resid_post = resid_pre + attn_out + mlp_out: the points are what each block writes to the stream."""
    caches = {}
    for point in ru.RESIDUAL_POINTS:
        with torch.no_grad(), ru.record(model, point=point) as caches[point]:
            model(**batch)
    for layer in range(N_LAYERS):
        summed = caches["resid_pre"][layer] + caches["attn_out"][layer] + caches["mlp_out"][layer]
        torch.testing.assert_close(summed, caches["resid_post"][layer], rtol=1e-5, atol=1e-5)


def test_resid_pre_equals_hidden_states(model: nn.Module, batch: dict[str, Tensor]) -> None:
    with torch.no_grad(), ru.record(model, point="resid_pre") as cache:
        hidden = model(**batch, output_hidden_states=True).hidden_states
    for layer in range(N_LAYERS):
        assert torch.equal(cache[layer], hidden[layer])


def test_remove_is_idempotent_and_hooks_are_gone(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    before = run(llama, batch)
    handle = ru.attach(llama, [0, 2], "resid_post", lambda act, ctx: act * 2)
    assert handle.active and ru.active_hooks(llama) == [handle]
    assert not torch.equal(run(llama, batch), before)
    handle.remove()
    handle.remove()
    assert not handle.active and ru.active_hooks(llama) == []
    assert torch.equal(run(llama, batch), before)


def test_nested_contexts_unwind_on_exception(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    before = run(llama, batch)
    v = ru.ControlVector({1: torch.ones(32)})
    with pytest.raises(RuntimeError, match="boom"):
        with ru.attach(llama, 0, "mlp_out", lambda act, ctx: act + 1), v.apply(llama, 3.0):
            with ru.record(llama, layers=[1, 2]) as cache:
                run(llama, batch)
                raise RuntimeError("boom")
    assert ru.active_hooks(llama) == []
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in llama.modules())
    assert torch.equal(run(llama, batch), before)
    assert cache.layers == [1, 2]


def test_error_raised_inside_a_hook_leaves_no_hook(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    def broken(act: Tensor, ctx: HookContext) -> Tensor:
        raise ValueError("bad hook")

    with pytest.raises(ValueError, match="bad hook"), ru.attach(llama, 1, "resid_post", broken):
        run(llama, batch)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in llama.modules())


def test_hooks_compose_in_registration_order(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    with torch.no_grad(), ru.record(llama, layers=1) as plain:
        llama(**batch)
    with (
        torch.no_grad(),
        ru.attach(llama, 1, "resid_post", lambda act, ctx: act * 2),
        ru.attach(llama, 1, "resid_post", lambda act, ctx: act + 1),
        ru.record(llama, layers=1) as hooked,
    ):
        llama(**batch)
    assert torch.equal(hooked[1], plain[1] * 2 + 1)


def test_remove_hooks_clears_only_this_packages_hooks(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    seen: list[int] = []
    foreign = ru.decoder_layers(llama)[0].register_forward_hook(lambda m, a, o: seen.append(1))
    ru.attach(llama, [0, 1], "resid_pre", lambda act, ctx: None)
    ru.ControlVector({2: torch.ones(32)}).attach(llama)
    assert ru.remove_hooks(llama) == 2
    assert ru.active_hooks(llama) == []
    run(llama, batch)
    assert seen == [1]
    foreign.remove()


def test_hook_sees_attention_mask_of_the_pass(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    masks: list[Tensor | None] = []
    with ru.attach(llama, 0, "resid_post", lambda act, ctx: masks.append(ctx.attention_mask)):
        run(llama, batch)
        run(llama, {"input_ids": batch["input_ids"]})
    assert masks[0] is not None and torch.equal(masks[0], batch["attention_mask"])
    assert masks[1] is None


def test_wrong_shape_from_a_hook_is_a_clear_error(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    with pytest.raises(ru.ShapeError, match=r"resid_post of layer 1 \(model.layers.1\) returned \(3, 7\)"):
        with ru.attach(llama, 1, "resid_post", lambda act, ctx: act[..., 0]):
            run(llama, batch)


def test_bad_layer_registers_nothing(llama: nn.Module) -> None:
    with pytest.raises(ru.LayerNotFoundError):
        ru.attach(llama, [0, 9], "resid_post", lambda act, ctx: None)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in llama.modules())


def test_gradients_flow_through_hooks(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    """Hooks return new tensors (never edit in place), so autograd trains through them."""
    delta = torch.zeros(32, requires_grad=True)
    with ru.attach(llama, 1, "resid_post", lambda act, ctx: act + delta):
        loss = llama(**batch).logits.square().mean()
    loss.backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0


def test_generation_with_kv_cache_runs_under_a_hook(llama: nn.Module, batch: dict[str, Tensor]) -> None:
    shapes: list[tuple[int, ...]] = []

    def note(act: Tensor, ctx: HookContext) -> None:
        assert ctx.attention_mask is not None
        shapes.append((act.shape[1], ctx.attention_mask.shape[1]))

    left_padded = {k: v[2:] for k, v in batch.items()}
    with ru.attach(llama, 0, "resid_post", note):
        llama.generate(**left_padded, max_new_tokens=2, do_sample=False)
    assert shapes == [(7, 7), (1, 8)]
