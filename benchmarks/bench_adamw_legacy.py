"""Step size of torch.optim.AdamW vs the published code's (transformers' pre-v5) AdamW, by gradient scale.

Run: python benchmarks/bench_adamw_legacy.py [--steps 150 --size 4096]
Both optimizers (lr 5e-5, betas 0.9/0.999, eps 1e-6, no weight decay) update identical tensors with the same
gradients: Gaussian noise of a given scale around a fixed mean direction, as RMU's gradients are. The table
shows the ratio of the mean |step| of torch's rule to the legacy rule's, at steps 1, 10 and the last; the
published Zephyr run logs mean |grad| between 2e-7 and 2e-4.
"""

import argparse

import torch

from repe_unlearn.rmu.optim import LegacyAdamW


def ratios(scale: float, steps: int, size: int, report: list[int]) -> tuple[float, dict[int, float]]:
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(size, generator=generator, dtype=torch.float64)
    legacy_p = torch.nn.Parameter(torch.zeros(size, dtype=torch.float64))
    torch_p = torch.nn.Parameter(torch.zeros(size, dtype=torch.float64))
    legacy = LegacyAdamW([legacy_p], lr=5e-5)
    ours = torch.optim.AdamW([torch_p], lr=5e-5, eps=1e-6, weight_decay=0.0)
    out, sizes = {}, []
    for step in range(1, steps + 1):
        grad = scale * (mean + torch.randn(size, generator=generator, dtype=torch.float64))
        sizes.append(float(grad.abs().mean()))
        before_legacy, before_torch = legacy_p.detach().clone(), torch_p.detach().clone()
        legacy_p.grad, torch_p.grad = grad.clone(), grad.clone()
        legacy.step()
        ours.step()
        if step in report:
            torch_step = (torch_p.detach() - before_torch).abs().mean()
            legacy_step = (legacy_p.detach() - before_legacy).abs().mean()
            out[step] = float(torch_step / legacy_step)
    return sum(sizes) / len(sizes), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()
    report = [1, 10, args.steps]
    print(f"{'mean |grad|':>12}" + "".join(f"{'step ' + str(s):>10}" for s in report) + "   (torch step / legacy step)")
    for scale in (2e-7, 1e-6, 1e-5, 2e-5, 2e-4, 1e-2):
        measured, row = ratios(scale / 1.128, args.steps, args.size, report)  # E|N(0, 2)| = 1.128
        print(f"{measured:>12.1e}" + "".join(f"{row[s]:>10.2f}" for s in report))


if __name__ == "__main__":
    main()
