"""Probes of several models over the same texts -> probes.csv, PNGs, vocab.json (`decpo probe`).

``probe_models`` does the work (no printing), as `ProbeOptions` say; the command line (`decpo.cli.probe`)
generates its flags from `ProbeOptions` and prints a short summary.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from decpo.data import TASKS, DataError, load_pairs, load_task
from decpo.io import atomic_write_json, atomic_write_text, check_writable
from decpo.models import ModelError, check_model_spec, load_model, load_tokenizer
from decpo.models.hooks import parse_layers
from decpo.probes.activation import CSV_COLUMNS, probe_pass, relative_depth
from decpo.probes.options import (
    MEASURES,
    PROBE_TOKENS,
    SAE,
    SPARSE_PROBING,
    ProbeOptionError,
    ProbeOptions,
    check_texts_source,
)
from decpo.probes.plots import plot_probes
from decpo.probes.sae_runner import SaeRun
from decpo.probes.sae_settings import require_sparsify
from decpo.probes.sparse_probing import KS, check_labels, sparse_probe
from decpo.probes.tokens import NEEDS_ANSWER, AnsweredText, check_token
from decpo.probes.vocab import vocab_view
from decpo.probes.weights import NoMLPBiasError, median, mlp_input_weights, neuron_scores, weight_change

logger = logging.getLogger(__name__)

WEIGHT_SITE = "mlp.in_weights"
VOCAB_SITE = "mlp.hidden"  # the vocabulary view reads the MLP's hidden units (the paper's Table 1)
PLOTTED_SPARSE = ("acc_k1", "neurons_needed")  # of the sparse-probing rows, the ones with a figure


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


def prompt_text(prompt) -> str:
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
    token: str | None = None,
) -> list[str] | list[AnsweredText]:
    """Texts from a task name (the prompts of its ``split``), a ``.txt`` file (one a line) or a pairs file.

    ``with_answer``: pairs and tasks give ``prompt + chosen`` (the last token is then the answer's last token,
    where a ``tokens=last`` penalty reads) instead of the prompt alone (the paper's probe: its last token).
    ``token`` (a penalty's token selection, `decpo.probes.tokens`): pairs and tasks give `AnsweredText` items
    (prompt, chosen, rejected), which `probe_pass` reads as the penalty does; a ``.txt`` file allows ``last``.
    """
    path = Path(source)
    if token is not None and token not in PROBE_TOKENS:
        raise ProbeOptionError(
            f"--token {token!r} is not a token selection; choose one of {', '.join(PROBE_TOKENS)}"
        )
    if path.is_file() and path.suffix == ".txt":
        if token in NEEDS_ANSWER:
            raise ProbeOptionError(
                f"--token {token} needs to know where each answer starts, which a .txt file of texts does not say: "
                "give a pairs file or a task as --texts"
            )
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif path.exists() or source in TASKS:
        records = load_pairs(path) if path.exists() else load_task(source, split, data_dir=data_dir)
        if token is not None:
            items = [
                AnsweredText(prompt_text(r["prompt"]), prompt_text(r["chosen"]), prompt_text(r["rejected"]))
                for r in records
                if prompt_text(r["prompt"]).strip()
            ][: num_texts or None]
            if len(items) < 2:
                raise DataError(f"--texts {source!r} gave {len(items)} pair(s); the probes need at least 2")
            return items
        texts = [
            prompt_text(r["prompt"]) + (prompt_text(r["chosen"]) if with_answer else "") for r in records
        ]
    else:
        check_texts_source(source)  # raises: neither a file nor a task
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
    texts: Sequence[str] | Sequence[AnsweredText],
    output_dir: str | Path,
    options: ProbeOptions | None = None,
    labels: Mapping[str, Sequence[int]] | None = None,
    sae_texts: tuple[Sequence[str], Sequence[str]] | None = None,
    **overrides,
) -> ProbeReport:
    """Probe each model (one loaded at a time); write probes.csv, a PNG per (probe, site), vocab.json.

    ``labels``: ``{concept: 0/1 per text}`` (`decpo.probes.concepts.concept_labels`), needed by the
    ``sparse_probing`` measure. ``sae_texts``: the ``sae`` measure's (training texts, measured texts), the
    SAE trained on (and the shift measured against) the first model. ``overrides``: `ProbeOptions` fields by keyword (``batch_size=4``), over
    ``options`` (default: the defaults).
    """
    opts = dataclasses.replace(options or ProbeOptions(), **overrides)
    _check_measures(opts, labels, len(texts))
    if SAE in opts.measures and not sae_texts:
        raise ProbeOptionError("the sae measure needs its texts (training, measured)")
    if SAE in opts.measures:
        require_sparsify("--measure sae")
    for spec in models.values():  # every model before the first loads: a missing one costs no probing
        check_model_spec(spec)
    try:
        check_token(opts.token, texts)
    except ValueError as e:
        raise ProbeOptionError(str(e)) from None
    output_dir = Path(output_dir)
    check_writable(output_dir)
    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    report = ProbeReport()
    tokenizer = None
    reference_weights = None  # the first model's MLP input weights, for the weight-change proxy
    first_name = next(iter(models))
    regularized: list[int] = []  # the marked blocks, resolved on the first model
    sae_run: SaeRun | None = None
    for name, spec in models.items():
        logger.info("probing %s (%s) on %d texts", name, spec, len(texts))
        model = load_model(spec, dtype=opts.dtype, device=device)
        tokenizer = _tokenizer(name, spec, tokenizer)
        if opts.regularized_layers is not None and name == first_name:
            regularized = _marked_blocks(opts.regularized_layers, model)
        _activation_rows(name, model, tokenizer, texts, opts, report, labels or {})
        if sae_texts and SAE in opts.measures:
            sae_run = sae_run or SaeRun.from_options(opts, *sae_texts, regularized=regularized)
            report.rows += sae_run.measure(name, model, tokenizer)
        if opts.weights:
            rows, pairs = _weight_rows(name, model, report, first_name, reference_weights)
            report.rows += rows
            if name == first_name:
                reference_weights = pairs
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    _write(report, output_dir, regularized)
    if sae_run is not None:
        report.files += sae_run.write(output_dir)
    return report


def _marked_blocks(spec, model) -> list[int]:
    """The blocks the figures mark as regularized, resolved on ``model``; none (with a warning) when one is
    out of its range (a figure's mark is not worth failing the probes for)."""
    try:
        return parse_layers(spec, model)
    except ModelError as e:
        logger.warning("regularized layers %s not marked on the figures: %s", spec, e)
        return []


def _tokenizer(name: str, spec: str, previous):
    """The model's own tokenizer, else (a model folder without one) the previous model's."""
    try:
        return load_tokenizer(spec)
    except (OSError, ValueError) as e:
        if previous is None:
            raise
        logger.warning("%s: no tokenizer of its own (%s); using the previous model's", name, e)
        return previous


def _check_measures(opts: ProbeOptions, labels: Mapping[str, Sequence[int]] | None, n_texts: int) -> None:
    """Before any model loads: known measures, and for sparse probing one usable label per text per concept."""
    if opts.regularized_layers is not None:
        try:
            parse_layers(opts.regularized_layers)
        except ValueError as e:
            raise ProbeOptionError(f"--regularized-layers: {e}") from None
    unknown = [m for m in opts.measures if m not in MEASURES]
    if unknown:
        raise ProbeOptionError(f"unknown measure(s) {unknown}; available: {', '.join(MEASURES)}")
    if SPARSE_PROBING in opts.measures and not labels:
        raise DataError(
            "sparse_probing needs labelled texts (concepts with a 0/1 label per text): --texts synthetic, reading, sycophancy or toxicity"
        )
    for concept, y in (labels or {}).items() if SPARSE_PROBING in opts.measures else ():
        if len(y) != n_texts:
            raise ProbeOptionError(f"concept {concept!r}: {len(y)} labels for {n_texts} texts")
        check_labels(np.asarray(y), concept, opts.sparse_folds)


def _activation_rows(
    name: str, model, tokenizer, texts: Sequence[str], opts: ProbeOptions, report, labels: Mapping
) -> None:
    """One probe pass of ``model``: its rows (and its vocabulary view, its sparse probing) into ``report``."""
    layer_list = parse_layers(opts.layers, model)
    requested = [(site, layer) for site in opts.sites for layer in layer_list]
    sparse: list[tuple[str, int]] = []
    if SPARSE_PROBING in opts.measures:
        blocks = layer_list if opts.sparse_layers is None else parse_layers(opts.sparse_layers, model)
        sparse = [(site, layer) for site in opts.sites for layer in blocks]
    extra = [(VOCAB_SITE, opts.vocab_layer)] if opts.vocab_layer is not None else []
    extra += [pair for pair in sparse if pair not in requested]
    result = probe_pass(
        model,
        tokenizer,
        texts,
        token=opts.token or "last",
        sites=opts.sites,
        layers=layer_list,
        batch_size=opts.batch_size,
        max_length=opts.max_length,
        progress=opts.progress,
        desc=name,
        extra_pairs=extra,
        eps_zero=opts.eps_zero,
        max_gram_rows=opts.max_gram_rows,
        keep_activations=sparse,
    )
    report.rows += result.rows(name, opts.probes, pairs=requested)
    report.rows += _sparse_rows(name, result, sparse, labels, opts)
    if opts.vocab_layer is not None:
        layer = parse_layers([opts.vocab_layer], model)[0]
        mean_hidden = result.stats[(VOCAB_SITE, layer)].mean_activation()
        report.vocab[name] = {
            "layer": layer,
            "site": VOCAB_SITE,
            "n_texts": result.n_texts,
            "dims": vocab_view(
                model,
                tokenizer,
                layer,
                mean_hidden,
                top_dims=opts.vocab_top_dims,
                top_tokens=opts.vocab_top_tokens,
            ),
        }


def _sparse_rows(name: str, result, pairs, labels: Mapping, opts: ProbeOptions) -> list[dict]:
    """k-sparse probing rows of each concept at each ``(site, layer)`` of ``pairs`` (`sparse_probe`)."""
    rows = []
    bar = tqdm(pairs, desc=f"{name} sparse probing", unit="layer", disable=not opts.progress, leave=False)
    for site, layer in bar:
        x = result.activations[(site, layer)]  # (n_texts, D), one row per text read
        for concept, y in labels.items():
            y = [y[i] for i in result.read] if result.read is not None else y  # pairs too long were skipped
            probed = sparse_probe(x, y, concept=concept, ks=KS, n_folds=opts.sparse_folds)
            rows += [
                {
                    "model": name,
                    "layer": layer,
                    "site": site,
                    "probe": measure,
                    "value": value,
                    "n_texts": probed.n_texts,
                    "depth": relative_depth(layer, result.num_layers),
                }
                for measure, value in probed.values().items()
            ]
    return rows


def _plotted(row: dict) -> bool:
    """Whether ``row`` gets a figure: all but the sparse-probing rows other than `PLOTTED_SPARSE` and the SAE's
    (one block)."""
    parts = row["probe"].split("/")
    return (
        parts[0] not in ("sparse_probe", "sae") or parts[0] == "sparse_probe" and parts[1] in PLOTTED_SPARSE
    )


def _write(report: ProbeReport, output_dir: Path, regularized: Sequence[int] = ()) -> None:
    """probes.csv, the plots (``regularized`` blocks marked) and vocab.json (when any), each listed in
    ``report.files``."""
    atomic_write_text(output_dir / "probes.csv", rows_to_csv(report.rows))
    report.files.append(output_dir / "probes.csv")
    report.files += plot_probes([r for r in report.rows if _plotted(r)], output_dir, regularized=regularized)
    if report.vocab:
        atomic_write_json(output_dir / "vocab.json", report.vocab)
        report.files.append(output_dir / "vocab.json")


def _weight_rows(
    name, model, report: ProbeReport, first_name: str, reference_weights
) -> tuple[list[dict], list]:
    """weight_proxy rows of ``model``, weight_change_top100 vs the first model, and its MLP input weights.

    A model without MLP bias gives no rows and one note in ``report`` (not an error).
    """
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
