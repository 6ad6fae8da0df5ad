"""``repe-unlearn demo``: the whole pipeline on the shipped toy model and world."""

import argparse


def cmd_demo(args: argparse.Namespace) -> int:
    """Evaluate the shipped toy model, unlearn the hazard-like domain with RMU, evaluate again, write a report."""
    from .._demo import CHANCE, probe_verdict, run_demo

    print("repe-unlearn demo: a toy model that learned 50 invented pathogens (forget) and 50 invented towns (retain)")
    result = run_demo(args.out, overwrite=args.overwrite)
    width = max(len(name) for name in result.before)
    print(f"\n{'accuracy':<{width}}  before  after   (chance {CHANCE:.2f}; letter: lm-eval's WMDP format)")
    for name in result.before:
        print(f"{name:<{width}}  {result.before[name]:6.3f}  {result.after[name]:6.3f}")
    ppl = result.perplexity
    print(f"{'retain perplexity':<{width}}  {ppl['retain before']:6.3f}  {ppl['retain after']:6.3f}")
    base, model, hidden = probe_verdict(result.diagnostics)
    verdict = "still readable: hidden, not removed" if hidden else "near chance"
    print(
        f"linear probe for the forget facts at layer {result.diagnostics['steered_layer']}: base {base:.2f}, "
        f"unlearned {model:.2f} (chance {CHANCE:.2f}): {verdict}"
    )
    print("\nattacks on the unlearned model (forget accuracy on held-out pathogens, before -> after):")
    for name, attack in result.attacks.items():
        key = "forget (held-out)"
        print(f"  {name:<8} {attack['before'][key]:.3f} -> {attack['after'][key]:.3f}")
    battery = result.robustness
    print("\nthe robustness battery (held-out pathogens, before -> after; share of the forgotten accuracy recovered):")
    for name, row in battery["attacks"].items():
        share = "" if row["recovered"] is None else f"  {row['recovered']:.0%}"
        if "base_forget" in row["details"]:  # measured otherwise than the plain questions: its own base
            share += f"  (base model asked alike: {row['details']['base_forget']:.3f})"
        print(f"  {name:<26} {row['forget_before']:.3f} -> {row['forget_after']:.3f}{share}")
    print(f"  {battery['verdict']}")
    total = sum(result.seconds.values())
    print(f"\nRMU: {result.rmu['steps']} steps, c = {result.rmu['steering_coeff']:.1f}; {total:.0f} s in all")
    print(f"wrote {result.out}/report.md, results.json, robustness.json, plots, diagnostics/ and model/")
    return 0


def add_demo_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``demo``."""
    demo = sub.add_parser("demo", help=cmd_demo.__doc__, description=cmd_demo.__doc__)
    demo.add_argument("--out", default="repe-unlearn-demo", help="output directory (default: ./repe-unlearn-demo)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    demo.set_defaults(func=cmd_demo)
