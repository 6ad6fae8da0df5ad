"""``repe-unlearn robustness``: the whole "does it come back?" battery on one unlearned model, one report."""

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from ._common import (
    add_model_flags,
    distinct_inputs,
    input_paths,
    load_model,
    note_format,
    rmu_record,
    subject_fits_format,
    tokenizer_for,
)


def cmd_robustness(args: argparse.Namespace) -> int:
    """Run every attack on held-out forget questions; write robustness.json, robustness.png and report.md."""
    from .._outputs import OutputDir
    from ..data import read_mcq, read_texts
    from ..robustness import ATTACKS, battery

    # checked before any compute
    out = OutputDir(args.out, overwrite=args.overwrite, inputs=input_paths(args), kind="robustness")
    if args.attacks is not None and not args.attacks.strip(","):
        raise ConfigError(f"--attacks is empty; give some of: {', '.join(ATTACKS)}")
    if args.attacks is not None and any(not a.strip() for a in args.attacks.split(",")):
        raise ConfigError(f"--attacks {args.attacks!r} holds an empty name; separate names by single commas")
    chosen = [a.strip() for a in args.attacks.split(",")] if args.attacks else list(ATTACKS)
    unknown = [a for a in chosen if a not in ATTACKS]
    if unknown:
        raise ConfigError(f"--attacks: unknown attack {unknown[0]!r}; valid: {', '.join(ATTACKS)}")
    distinct_inputs(("--forget-mcq and --retain-mcq", args.forget_mcq, args.retain_mcq))
    subject_fits_format(args)
    forget, retain = read_mcq(args.forget_mcq), read_mcq(args.retain_mcq)
    relearn_texts, unrelated_texts = read_texts(args.relearn_texts), read_texts(args.unrelated_texts)
    rephrased = read_mcq(args.rephrased_mcq) if args.rephrased_mcq else None
    layer, _ = rmu_record(args.model)
    vectors = Path(args.model) / "control_vectors.safetensors"
    direction = None
    if "ablate" in chosen and layer is not None and vectors.is_file():
        import torch

        from .._io import read_safetensors

        direction = read_safetensors(vectors)[0]["0"].to(torch.float32)
    model = load_model(args.model, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code)
    base = None
    if args.base:
        base = load_model(args.base, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code)
    tokenizer = tokenizer_for(args)
    note_format([args.forget_mcq, args.retain_mcq, args.rephrased_mcq], args.format)  # every refusal is past

    def report(row: object) -> None:
        print(f"{row.attack:<28}{row.forget_before:8.3f} -> {row.forget_after:.3f}", flush=True)  # type: ignore[attr-defined]

    result = battery(
        model,
        tokenizer,
        forget_items=forget,
        retain_items=retain,
        relearn_texts=relearn_texts,
        unrelated_texts=unrelated_texts,
        base=base,
        direction=direction,
        layer=layer,
        rephrased_items=rephrased,
        format=args.format,
        subject=args.subject,
        attacks=chosen if args.attacks else None,  # named ones must run; the default list skips what cannot
        budget=args.budget,
        seed=args.seed,
        on_attack=report,
    )

    def fill(tmp: Path) -> None:
        (tmp / "robustness.json").write_text(json.dumps({"model": args.model, **result.to_dict()}, indent=2) + "\n")
        (tmp / "report.md").write_text(f"# Robustness of {args.model}\n\n" + result.markdown())
        result.figure().savefig(tmp / "robustness.png", dpi=120)

    out.write(fill)
    print(result.verdict())
    print(f"wrote {args.out}/robustness.json, report.md and robustness.png")
    return 0


def add_robustness_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``robustness``."""
    p = sub.add_parser("robustness", help=cmd_robustness.__doc__, description=cmd_robustness.__doc__)
    p.add_argument("--model", required=True, help="the unlearned model directory (never modified)")
    p.add_argument("--base", help="the model before unlearning (for the share of forgotten accuracy recovered)")
    p.add_argument("--forget-mcq", required=True, help="forget questions with an 'entity' field")
    p.add_argument("--retain-mcq", required=True, help="retain questions")
    p.add_argument(
        "--relearn-texts", required=True, help="forget texts about some entities (their questions are never scored)"
    )
    p.add_argument("--unrelated-texts", required=True, help="text naming no forget entity (e.g. the retain corpus)")
    p.add_argument("--rephrased-mcq", help="the same facts asked with other templates (with 'entity')")
    p.add_argument(
        "--format", choices=["letter", "cloze"], default="cloze", help="as in repe-unlearn eval (default: cloze)"
    )
    p.add_argument("--subject", help="as in repe-unlearn eval")
    p.add_argument("--attacks", help="comma-separated subset (default: all that the inputs allow)")
    p.add_argument("--budget", choices=["quick", "full"], default="quick", help="steps per attack (docs/attacks.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks' sampling")
    p.add_argument("--out", required=True, help="output directory (refused if it exists and is not empty)")
    p.add_argument("--overwrite", action="store_true", help="replace an --out this tool wrote")
    add_model_flags(p)
    p.set_defaults(func=cmd_robustness)
