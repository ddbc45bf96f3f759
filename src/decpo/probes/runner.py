"""``decpo probe``: probes of several models over the same texts -> probes.csv, PNGs, vocab.json.

``probe_models`` does the work (no printing); ``add_parser`` registers the subcommand, whose function
prints a short summary and returns the exit code.
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from decpo.io import atomic_write_json, atomic_write_text, check_writable
from decpo.models.hooks import parse_layers
from decpo.names import MLP_UP_PROJ
from decpo.probes.activation import CSV_COLUMNS, probe_pass, relative_depth
from decpo.probes.stats import ACTIVATION_PROBES
from decpo.probes.weights import NoMLPBiasError, mlp_input_weights, neuron_scores, weight_change

logger = logging.getLogger(__name__)

WEIGHT_SITE = "mlp.in_weights"


def parse_model_specs(specs: Sequence[str]) -> dict[str, str]:
    """``["base=default", "runs/dpo/final"]`` -> ``{"base": "default", "dpo": "runs/dpo/final"}``.

    Without ``name=``, the name is the folder (its parent for a run's ``final/``) or the spec itself.
    """
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, target = spec.partition("=")
        if not sep:
            path = Path(spec.rstrip("/"))
            target, name = (
                spec,
                (path.parent.name if path.name == "final" and path.parent.name else path.name),
            )
        if not name or not target:
            raise ValueError(f"--model expects NAME=SPEC or SPEC, got {spec!r}")
        if name in out:
            raise ValueError(f"model name {name!r} given twice; name them with NAME=SPEC")
        out[name] = target
    return out


def _prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    # conversational prompt: the messages' contents, one per line
    return "\n".join(str(m.get("content", "")) for m in prompt)


def load_texts(
    source: str,
    num_texts: int | None = None,
    data_dir: str | None = None,
    split: str = "train",
    with_answer: bool = False,
) -> list[str]:
    """Texts from a task name (the prompts of its ``split``), a ``.txt`` file (one a line) or a pairs file.

    ``with_answer``: pairs and tasks give ``prompt + chosen`` (the last token is then the answer's last token,
    where a ``tokens=last`` penalty reads) instead of the prompt alone (the paper's probe: its last token).
    """
    from decpo.data import TASKS, DataError, load_pairs, load_task

    path = Path(source)
    if path.is_file() and path.suffix == ".txt":
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif path.exists() or source in TASKS:
        records = load_pairs(path) if path.exists() else load_task(source, split, data_dir=data_dir)
        texts = [
            _prompt_text(r["prompt"]) + (_prompt_text(r["chosen"]) if with_answer else "") for r in records
        ]
    else:
        raise DataError(f"--texts {source!r} is neither a file nor a task name (tasks: {', '.join(TASKS)})")
    texts = [t for t in texts if t.strip()]
    if num_texts:
        texts = texts[:num_texts]
    if len(texts) < 2:
        raise DataError(f"--texts {source!r} gave {len(texts)} non-empty text(s); the probes need at least 2")
    return texts


@dataclass
class ProbeReport:
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    vocab: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def rows_to_csv(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in CSV_COLUMNS})
    return buffer.getvalue()


def probe_models(
    models: dict[str, str],
    texts: Sequence[str],
    output_dir: str | Path,
    *,
    sites: Sequence[str] = (MLP_UP_PROJ,),
    layers: str | Sequence[int] | None = None,
    batch_size: int = 16,
    max_length: int = 256,
    probes: Sequence[str] = ACTIVATION_PROBES,
    vocab_layer: int | None = None,
    vocab_top_dims: int = 10,
    vocab_top_tokens: int = 10,
    weights: bool = True,
    dtype: str = "float32",
    device: str | None = None,
    progress: bool = True,
    **stats_kwargs,
) -> ProbeReport:
    """Probe each model (one loaded at a time); write probes.csv, a PNG per (probe, site), vocab.json."""
    import torch

    from decpo.models import load_model, load_tokenizer
    from decpo.probes.plots import plot_probes
    from decpo.probes.vocab import vocab_view

    output_dir = Path(output_dir)
    check_writable(output_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    report = ProbeReport()
    tokenizer = None
    reference_weights = None  # the first model's MLP input weights, for the weight-change proxy
    first_name = next(iter(models))
    for name, spec in models.items():
        logger.info("probing %s (%s) on %d texts", name, spec, len(texts))
        model = load_model(spec, dtype=dtype, device=device)
        try:
            tokenizer = load_tokenizer(spec)
        except (OSError, ValueError) as e:
            if tokenizer is None:
                raise
            logger.warning("%s: no tokenizer of its own (%s); using the previous model's", name, e)
        layer_list = parse_layers(layers, model)
        extra = [("mlp.hidden", vocab_layer)] if vocab_layer is not None else []
        result = probe_pass(
            model,
            tokenizer,
            texts,
            sites=sites,
            layers=layer_list,
            batch_size=batch_size,
            max_length=max_length,
            progress=progress,
            desc=name,
            extra_pairs=extra,
            **stats_kwargs,
        )
        requested = [(site, layer) for site in sites for layer in layer_list]
        report.rows += result.rows(name, probes, pairs=requested)
        if vocab_layer is not None:
            layer = parse_layers([vocab_layer], model)[0]
            mean_hidden = result.stats[("mlp.hidden", layer)].mean_activation()
            report.vocab[name] = {
                "layer": layer,
                "site": "mlp.hidden",
                "n_texts": result.n_texts,
                "dims": vocab_view(
                    model, tokenizer, layer, mean_hidden, top_dims=vocab_top_dims, top_tokens=vocab_top_tokens
                ),
            }
        if weights:
            rows, pairs = _weight_rows(name, model, report, first_name, reference_weights)
            report.rows += rows
            if name == first_name:
                reference_weights = pairs
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    atomic_write_text(output_dir / "probes.csv", rows_to_csv(report.rows))
    report.files.append(output_dir / "probes.csv")
    report.files += plot_probes(report.rows, output_dir)
    if report.vocab:
        atomic_write_json(output_dir / "vocab.json", report.vocab)
        report.files.append(output_dir / "vocab.json")
    return report


def _weight_rows(
    name, model, report: ProbeReport, first_name: str, reference_weights
) -> tuple[list[dict], list]:
    """weight_proxy rows of ``model``, weight_change_top100 vs the first model, and its MLP input weights.

    A model without MLP bias gives no rows and one note in ``report`` (not an error).
    """
    from decpo.probes.weights import median

    try:
        pairs = mlp_input_weights(model)
    except NoMLPBiasError as e:
        if not report.notes:
            report.notes.append(f"weight-based proxy skipped: {e}")
        return [], None
    n = len(pairs)
    medians = [median(neuron_scores(w, b)) for w, b in pairs]
    scale = max(abs(m) for m in medians) or 1.0
    rows = [
        {
            "model": name,
            "layer": layer,
            "site": WEIGHT_SITE,
            "probe": "weight_proxy",
            "value": m / scale,
            "n_texts": 0,
            "depth": relative_depth(layer, n),
        }
        for layer, m in enumerate(medians)
    ]
    if reference_weights is not None and name != first_name:
        try:
            changes = weight_change(reference_weights, pairs, top_k=100)
        except ValueError as e:  # different architectures: no per-neuron correspondence
            report.notes.append(f"weight change of {name} vs {first_name} skipped: {e}")
            return rows, pairs
        rows += [
            {
                "model": name,
                "layer": layer,
                "site": WEIGHT_SITE,
                "probe": "weight_change_top100",
                "value": c,
                "n_texts": 0,
                "depth": relative_depth(layer, n),
            }
            for layer, c in enumerate(changes)
        ]
    return rows, pairs


def _cmd_probe(args: argparse.Namespace) -> int:
    models = parse_model_specs(args.model or ["default"])
    texts = load_texts(args.texts, args.num_texts, args.data_dir)
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    unknown = [p for p in probes if p not in ACTIVATION_PROBES]
    if unknown:
        raise ValueError(f"unknown probe(s) {unknown}; available: {', '.join(ACTIVATION_PROBES)}")
    report = probe_models(
        models,
        texts,
        args.output_dir,
        sites=sites,
        layers=args.layers,
        batch_size=args.batch_size,
        max_length=args.max_length,
        probes=probes,
        vocab_layer=args.vocab_layer,
        vocab_top_dims=args.vocab_top_dims,
        vocab_top_tokens=args.vocab_top_tokens,
        weights=not args.no_weights,
        dtype=args.dtype,
        device=args.device,
        eps_zero=args.eps_zero,
        max_gram_rows=args.max_gram_rows,
    )
    for note in report.notes:
        print(f"note: {note}")
    for name in models:
        values = [
            r["value"]
            for r in report.rows
            if r["model"] == name
            and r["probe"] == "decorrelation"
            and r["site"] == sites[0]
            and math.isfinite(r["value"])
        ]
        if values:
            print(
                f"{name}: decorrelation ({sites[0]}) mean over {len(values)} layers "
                f"{sum(values) / len(values):.4f}"
            )
    print(f"{len(report.rows)} rows, {len(texts)} texts -> {report.files[0]}")
    print(f"{len(report.files) - 1} other file(s) in {Path(args.output_dir)}")
    return 0


def add_parser(subparsers) -> None:
    """Register ``decpo probe`` on an argparse subparsers object; its ``func`` returns an exit code."""
    p = subparsers.add_parser(
        "probe",
        help="monosemanticity probes of one or more models, per layer",
        description="Feature decorrelation, sparsity, monosemantic scale (activations) and the weight-based "
        "proxy of several models over the same texts; writes probes.csv and one PNG per probe.",
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="NAME=SPEC",
        help="a model to probe (repeatable): 'default', 'tiny-random-llama', a folder, a run's final/ "
        "adapter, a .gguf file or a Hub id; the difference plot is the last minus the one named dpo "
        "(else the first)",
    )
    p.add_argument(
        "--texts",
        default="synthetic",
        help="a task name (its train prompts), a .txt file (one text a "
        "line) or a preference-pairs file (its prompts)",
    )
    p.add_argument("--num-texts", type=int, default=1000, help="use the first N texts (the paper used 1000)")
    p.add_argument("--output-dir", default="probes", help="folder for probes.csv, the PNGs and vocab.json")
    p.add_argument(
        "--sites",
        default=MLP_UP_PROJ,
        help="comma-separated activation sites (mlp.up_proj, mlp.hidden, mlp.out, resid_post)",
    )
    p.add_argument(
        "--layers",
        default="all",
        help="'all', or comma-separated blocks and ranges, e.g. 3,-1 or 0-29:4 (negative from the end)",
    )
    p.add_argument("--probes", default=",".join(ACTIVATION_PROBES), help="comma-separated activation probes")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--max-length", type=int, default=256, help="texts longer than this many tokens keep their end"
    )
    p.add_argument("--data-dir", default=None, help="data directory of the tasks (else env DECPO_DATA_DIR)")
    p.add_argument(
        "--vocab-layer",
        type=int,
        default=None,
        help="write vocab.json: top MLP dims of this block "
        "projected through the unembedding (the paper's Table 1)",
    )
    p.add_argument("--vocab-top-dims", type=int, default=10)
    p.add_argument("--vocab-top-tokens", type=int, default=10)
    p.add_argument("--eps-zero", type=float, default=1e-2, help="|z| below this counts as near zero")
    p.add_argument(
        "--max-gram-rows",
        type=int,
        default=512,
        help="texts behind the squared-cosine probes of wide "
        "layers (memory: 2 * width * this bytes per layer)",
    )
    p.add_argument("--no-weights", action="store_true", help="skip the weight-based proxy")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=_cmd_probe)
