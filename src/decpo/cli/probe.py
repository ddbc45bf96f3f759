"""The ``decpo probe`` subcommand: the models and texts to probe, the flags of `ProbeOptions` (generated),
and the printed summary."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

from decpo.cli.flags import add_dataclass_flags, comma_list, from_flags, positive_int
from decpo.io import LOCK_FILE, output_lock, removed_if_start_fails
from decpo.probes.concept_texts import CONCEPT_SOURCES, CONCEPT_TOKEN
from decpo.probes.concepts import CONCEPTS, labelled_texts
from decpo.probes.options import SAE, SPARSE_PROBING, ProbeOptionError, ProbeOptions, check_texts_source
from decpo.probes.proxy_check import monosemantic_side, proxy_tracking

if TYPE_CHECKING:
    from decpo.probes.runner import ProbeReport


FLAGS = {"measures": "measure"}  # fields whose flag has another name


def add_parser(subparsers) -> None:
    """Register ``decpo probe`` on an argparse subparsers object; its ``func`` returns an exit code."""
    p = subparsers.add_parser(
        "probe",
        help="monosemanticity probes of one or more models, per layer",
        description="Feature decorrelation, sparsity, monosemantic scale (activations) and the weight-based "
        "proxy of several models over the same texts, and on request k-sparse probing of labelled concepts "
        "(--measure sparse_probing); writes probes.csv and one PNG per probe.",
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
        help="a task name (its train prompts), a .txt file (one text a line) or a preference-pairs file, its "
        "prompts; with --token, a task's or a pairs file's prompt + chosen answer; with --measure sparse_probing, "
        "sycophancy and toxicity give the texts made for their concepts (decpo.probes.concept_texts: a "
        "prompt and an answer, read at the mean over the answer's tokens unless --token says otherwise) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--num-texts",
        type=positive_int,
        default=1000,
        help="use the first N texts, N >= 1 (default: %(default)s, as the paper)",
    )
    p.add_argument(
        "--output-dir",
        default="probes",
        help="folder for probes.csv, the PNGs and vocab.json (default: %(default)s)",
    )
    p.add_argument("--data-dir", default=None, help="data directory of the tasks (else env DECPO_DATA_DIR)")
    p.add_argument(
        "--concepts",
        type=comma_list,
        default=None,
        help=f"comma-separated concepts of sparse probing, of {', '.join(CONCEPTS)} (default: all that the "
        "texts carry)",
    )
    # progress bars: always shown; --measure (one flag, names comma-separated), as in "--measure sparse_probing"
    options = add_dataclass_flags(p, ProbeOptions, exclude=("progress",), flags=FLAGS)
    p.set_defaults(func=_cmd_probe, option_fields=options)


def _cmd_probe(args: argparse.Namespace) -> int:
    options = from_flags(ProbeOptions, args, args.option_fields, FLAGS)  # a bad name fails here, in a second
    check_texts_source(args.texts)
    # lazy: the probes pull in torch and transformers (slow for `decpo --help`)
    from decpo.probes.runner import load_texts, parse_model_specs, probe_models

    models = parse_model_specs(args.model or ["default"])
    labels = None
    if SPARSE_PROBING in options.measures:  # the texts' concepts label them: texts and labels come together
        texts, labels = labelled_texts(args.texts, args.num_texts, args.data_dir, names=args.concepts)
        if args.texts in CONCEPT_SOURCES and options.token is None:  # prompt + answer: read over the answer
            options = dataclasses.replace(options, token=CONCEPT_TOKEN)
    else:
        texts = load_texts(args.texts, args.num_texts, args.data_dir, token=options.token)
    sae_texts = _sae_texts(args, options) if SAE in options.measures else None
    out = Path(args.output_dir)
    with (
        removed_if_start_fails(out),  # a failed probe leaves no empty folder
        output_lock(out / LOCK_FILE, f"probe folder {out}", "decpo probe"),  # one writer at a time
    ):
        report = probe_models(models, texts, args.output_dir, options, labels=labels, sae_texts=sae_texts)
    _print_summary(report, models, options.sites[0], len(texts), Path(args.output_dir))
    return 0


def _sae_texts(args: argparse.Namespace, options: ProbeOptions) -> tuple[list[str], list[str]]:
    """The SAE's (training texts, measured texts): of --texts, the first --num-texts are measured and the next
    --sae-train-texts train it (none when it is loaded), each prompt + chosen answer of a task or pairs file."""
    from decpo.probes.runner import load_texts  # lazy: torch

    extra = 0 if options.sae_path else options.sae_train_texts
    texts = load_texts(args.texts, args.num_texts + extra, args.data_dir, with_answer=True)
    measured, train = texts[: args.num_texts], texts[args.num_texts :]
    if extra and not train:
        raise ProbeOptionError(
            f"--texts {args.texts!r} has no text after the first {args.num_texts} to train the SAE "
            "on: lower --num-texts, give more texts, or load an SAE with --sae-path"
        )
    return list(train), list(measured)


def _print_summary(report: ProbeReport, models: dict[str, str], site: str, n_texts: int, out: Path) -> None:
    """The notes, each model's mean decorrelation at the first site, and what was written."""
    for note in report.notes:
        print(f"note: {note}")
    for name in models:
        values = [
            r["value"]
            for r in report.rows
            if r["model"] == name
            and r["probe"] == "decorrelation"
            and r["site"] == site
            and math.isfinite(r["value"])
        ]
        if values:
            print(
                f"{name}: decorrelation ({site}) mean over {len(values)} layers {sum(values) / len(values):.4f}"
            )
        _print_sparse(report, name, site)
        _print_sae(report, name)
    _print_tracking(report, site)
    print(f"{len(report.rows)} rows, {n_texts} texts -> {report.files[0]}")
    print(f"{len(report.files) - 1} other file(s) in {out}")


def _print_sparse(report: ProbeReport, name: str, site: str) -> None:
    """Each concept's k = 1 accuracy and neurons needed at each probed layer of ``site`` (sparse probing)."""
    values = {
        (r["layer"], r["probe"]): r["value"]
        for r in report.rows
        if r["model"] == name and r["site"] == site and r["probe"].startswith("sparse_probe/")
    }
    for (layer, probe), acc in values.items():
        kind, concept = probe.split("/")[1:]
        if kind == "acc_k1":
            needed = values[(layer, f"sparse_probe/neurons_needed/{concept}")]
            shown = f"{needed:.0f}" if math.isfinite(needed) else "n/a (the dense probe does not beat chance)"
            print(f"{name}: {concept} ({site}, layer {layer}) k=1 accuracy {acc:.3f}, neurons needed {shown}")


def _print_sae(report: ProbeReport, name: str) -> None:
    """The SAE measures of ``name`` on one line."""
    values = {
        r["probe"][4:]: (r["value"], r["site"], r["layer"])
        for r in report.rows
        if r["model"] == name and r["probe"].startswith("sae/")
    }
    if values:
        site, layer = next(iter(values.values()))[1:]
        shown = ", ".join(f"{k} {v[0]:.3f}" for k, v in values.items())
        print(f"{name}: SAE ({site}, layer {layer}) {shown}")


def _print_tracking(report: ProbeReport, site: str) -> None:
    """Whether decorrelation tracks each concept's neurons needed, over every model and layer of ``site``, and
    each SAE measure, over the models at the SAE's block (`decpo.probes.proxy_check.proxy_tracking`)."""
    needed = sorted(
        {r["probe"] for r in report.rows if r["probe"].startswith("sparse_probe/neurons_needed/")}
    )
    for measure in needed:
        concept = measure.rsplit("/", 1)[1]
        label = f"neurons needed ({concept}, {site})"
        print(proxy_tracking(report.rows, measure, site=site).sentence(label, monosemantic_side(measure)))
    sae = [r for r in report.rows if r["probe"].startswith("sae/")]
    for measure in ("sae/l0", "sae/fvu", "sae/dead_frac", "sae/dense_frac"):
        if any(r["probe"] == measure for r in sae):  # the models at the SAE's block
            where = f"{sae[0]['site']}, block {sae[0]['layer']}"
            print(
                proxy_tracking(report.rows, measure, site=sae[0]["site"]).sentence(
                    f"SAE {measure[4:]} ({where})", monosemantic_side(measure)
                )
            )
