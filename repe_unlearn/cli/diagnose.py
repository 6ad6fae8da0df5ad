"""``repe-unlearn diagnose``: norms and linear probes per layer, base vs unlearned, from one caching pass each."""

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._common import (
    distinct_inputs,
    input_paths,
    load_model,
    mcq_sets,
    note_format,
    positive_int,
    rmu_record,
    tokenizer_for,
)
from ._steering import add_intervention_flags, load_target_model, recorded, with_interventions


@with_interventions
def cmd_diagnose(args: argparse.Namespace) -> int:
    """Residual norms and linear probes per layer for a model (and its base), written as JSON, PNGs and a report."""
    from .._outputs import OutputDir
    from .._reading import read_texts

    out = OutputDir(args.out, overwrite=args.overwrite, inputs=input_paths(args), kind="diagnose")
    distinct_inputs(("--forget and --retain", args.forget, args.retain), ("--model and --base", args.model, args.base))
    forget, retain = read_texts(args.forget), read_texts(args.retain)
    mcq = mcq_sets(args.mcq)
    import torch  # once the output and inputs are known to be good

    from .._distributed import is_main
    from .._io import read_safetensors
    from ..diagnostics import diagnose, write_report
    from ..diagnostics.run import MIN_EXAMPLES

    counts = {args.forget: len(forget), args.retain: len(retain), **{p: len(mcq[Path(p).stem]) for p in args.mcq}}
    for path, n in counts.items():
        if n < MIN_EXAMPLES:
            raise ConfigError(f"{path} holds {n} usable examples; probes need at least {MIN_EXAMPLES}")
    direction = None
    vectors = Path(args.control_vectors) if args.control_vectors else Path(args.model) / "control_vectors.safetensors"
    if vectors.is_file():
        tensors, _ = read_safetensors(vectors)
        if "0" not in tensors:
            raise ConfigError(f"{vectors} has no control vector under key '0'")
        direction = tensors["0"]
    elif args.control_vectors:
        raise ConfigError(f"control vector file {vectors} does not exist")
    steered, updated = rmu_record(args.model)
    model = load_target_model(args)
    base = None
    if args.base:
        base = load_model(args.base, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code)
    tokenizer = tokenizer_for(args)
    note_format(args.mcq, args.format)  # every refusal is past: a refusal stays one line
    dtype = torch.float16 if args.float16 else torch.float32
    result = diagnose(
        model,
        tokenizer,
        forget,
        retain,
        mcq,
        base=base,
        format=args.format,
        direction=direction,
        steered_layer=steered,
        updated_layers=updated,
        batch_size=args.batch_size,
        max_length=args.max_length,
        dtype=dtype,
        progress=True,
    )
    if not is_main():  # under torchrun rank 0 alone writes
        return 0

    def fill(tmp: Path) -> None:
        write_report(result, tmp)
        record = json.loads((tmp / "diagnostics.json").read_text())
        record["interventions"] = recorded(args)
        (tmp / "diagnostics.json").write_text(json.dumps(record, indent=2) + "\n")

    out.write(fill)
    _print_table(result.to_dict())
    print(f"wrote {args.out}/diagnostics.json, norms.png, probes.png, report.md")
    return 0


def _print_table(d: dict[str, Any]) -> None:
    models = list(d["norms"])
    probes = list(d["probe_accuracy"][models[0]])
    header = ["layer"] + [f"norm {m[0]}/{dom[0]}" for m in models for dom in ("forget", "retain")]
    header += [f"{p[:10]} {m[0]}" for p in probes for m in models]
    print("  ".join(f"{h:>12}" for h in header))
    for i, layer in enumerate(d["layers"]):
        row = [str(layer)] + [f"{d['norms'][m][dom][i]:.2f}" for m in models for dom in ("forget", "retain")]
        row += [f"{d['probe_accuracy'][m][p][i]:.2f}" for p in probes for m in models]
        print("  ".join(f"{v:>12}" for v in row))
    print("chance: " + ", ".join(f"{k} {v:.2f}" for k, v in d["chance"].items()) + "  (b = base, m = model)")


def add_diagnose_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``diagnose``."""
    from ._common import add_model_flags

    p = sub.add_parser("diagnose", help=cmd_diagnose.__doc__, description=cmd_diagnose.__doc__)
    p.add_argument("--model", required=True, help="model directory (e.g. the output of repe-unlearn unlearn)")
    p.add_argument("--base", help="the model before unlearning, for side-by-side comparison")
    p.add_argument("--forget", required=True, help="forget-domain texts (JSONL with 'text', plain text, ...)")
    p.add_argument("--retain", required=True, help="retain-domain texts")
    p.add_argument("--mcq", required=True, action="append", metavar="FILE", help="MCQ file to probe; repeatable")
    p.add_argument(
        "--format",
        choices=["letter", "cloze"],
        default="letter",
        help="letter (the default): probe the last prompt token for the answer letter; cloze: the stem's last token",
    )
    p.add_argument(
        "--control-vectors",
        metavar="FILE",
        help="RMU control vectors (default: MODEL/control_vectors.safetensors when present)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--batch-size", type=positive_int, default=32, help="texts per forward pass")
    p.add_argument(
        "--max-length",
        type=positive_int,
        default=512,
        help="tokens per text or prompt; longer ones are cut, so memory is bounded by batch size x this (default: 512)",
    )
    p.add_argument("--float16", action="store_true", help="keep cached features in float16 (half the memory)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_model_flags(p)
    add_intervention_flags(p)
    p.set_defaults(func=cmd_diagnose)
