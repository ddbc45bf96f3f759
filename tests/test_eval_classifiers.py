"""Text classifiers (toxicity, sentiment): the default and jigsaw-bilstm against Perspective scores of RTP,
ranking, HF, VADER."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from decpo.evaluation.metrics import auroc, spearman
from decpo.scoring import jigsaw_bilstm
from decpo.scoring.classifiers import (
    HFClassifierScorer,
    ProfanityCheckScorer,
    ScorerError,
    VaderScorer,
    make_scorer,
    toxic_label_index,
)

REPO = Path(__file__).resolve().parents[1]


def rtp_data_dir() -> Path | None:
    candidate = Path(os.environ.get("DECPO_DATA_DIR") or REPO.parent / "shared" / "data")
    return candidate if (candidate / "toxicity" / "challenging_prompts.jsonl").is_file() else None


needs_rtp = pytest.mark.skipif(
    rtp_data_dir() is None,
    reason="RealToxicityPrompts file absent: set DECPO_DATA_DIR or place the data at ../shared/data",
)


def rtp_texts(parts=("prompt", "continuation")) -> tuple[list[str], list[float]]:
    """Texts of the challenging prompts (each ``part``) with their Perspective toxicity (the RTP schema)."""
    texts, perspective = [], []
    for line in (rtp_data_dir() / "toxicity" / "challenging_prompts.jsonl").read_text().splitlines():
        row = json.loads(line)
        for part in parts:
            text, tox = row[part].get("text", ""), row[part].get("toxicity")
            if tox is not None and text.strip():
                texts.append(text)
                perspective.append(tox)
    return texts, perspective


@needs_rtp
def test_default_scorer_agrees_with_perspective_on_rtp_text():
    # Every challenging prompt is toxic by Perspective; their continuations are mixed, so both are scored
    # (each text against its own Perspective score, read from the RealToxicityPrompts schema).
    texts, perspective = rtp_texts()
    assert len(texts) > 1000
    labels = [p >= 0.5 for p in perspective]
    assert 100 < sum(labels) < len(labels) - 100
    scores = make_scorer().score(texts)
    assert auroc(scores, labels) > 0.8  # measured 0.97 on these 1,193 texts
    assert spearman(scores, perspective) > 0.5  # measured 0.80


@needs_rtp
@pytest.mark.skipif(
    jigsaw_bilstm.package_files() is None,
    reason=f"toxic-comment-classifier wheel not installed: `{jigsaw_bilstm.INSTALL}`",
)
def test_jigsaw_bilstm_agrees_with_perspective_on_rtp_continuations():
    # the continuations alone: the evaluation scores continuations (measured on 593 texts, 254 toxic by
    # Perspective: AUROC 0.91, Spearman 0.81; profanity-check 0.92 and 0.82)
    texts, perspective = rtp_texts(("continuation",))
    scores = make_scorer("jigsaw-bilstm").score(texts)
    assert auroc(scores, [p >= 0.5 for p in perspective]) > 0.85
    assert spearman(scores, perspective) > 0.7


def test_default_scorer_ranks_toxic_above_benign():
    toxic = [
        "You are a fucking idiot.",
        "Shut up, you stupid bitch.",
        "I hate you, you worthless piece of shit.",
    ]
    benign = ["Have a lovely day at the park.", "The meeting moved to Tuesday.", "Thanks for the recipe!"]
    scorer = ProfanityCheckScorer()
    t, b = scorer.score(toxic), scorer.score(benign)
    assert all(0.0 <= x <= 1.0 for x in t + b)
    assert min(t) > max(b)
    assert min(t) > 0.5 > max(b)
    assert scorer.score([]) == []


def test_vader_sentiment():
    vader = make_scorer("vader")
    assert isinstance(vader, VaderScorer)
    pos, neg, neutral = vader.compound(
        ["I feel hopeful and happy.", "This is awful and I hate it.", "The door."]
    )
    assert pos >= VaderScorer.POSITIVE and neg < 0 and neutral == 0.0
    assert vader.score(["The door."]) == [0.5]


def test_toxic_label_index():
    assert toxic_label_index({0: "non-toxic", 1: "toxic"}) == 1
    assert toxic_label_index({0: "toxic", 1: "not_toxic"}) == 0
    assert toxic_label_index({0: "NEUTRAL", 1: "HATE"}) == 1
    assert toxic_label_index({0: "LABEL_0", 1: "LABEL_1"}) == 1
    with pytest.raises(ScorerError):
        toxic_label_index({0: "a", 1: "b", 2: "c"})


def test_hf_classifier_scorer_picks_the_toxic_label(tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from decpo.models.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=0,
        num_labels=2,
        id2label={0: "toxic", 1: "non-toxic"},
        label2id={"toxic": 0, "non-toxic": 1},
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    scorer = make_scorer(f"hf:{tmp_path}")
    assert isinstance(scorer, HFClassifierScorer) and scorer.toxic_label == "toxic"
    texts = ["Hello there", "The quick brown fox jumps"]
    got = scorer.score(texts)
    with torch.no_grad():
        expected = [model(**tokenizer(t, return_tensors="pt")).logits.softmax(-1)[0, 0].item() for t in texts]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got[0] != got[1]


def test_scorer_errors_are_clear(monkeypatch):
    with pytest.raises(ScorerError, match="unknown scorer"):
        make_scorer("nope")
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with pytest.raises(ScorerError, match="PERSPECTIVE_API_KEY"):
        make_scorer("perspective")
    try:
        import detoxify  # noqa: F401
    except ImportError:
        with pytest.raises(ScorerError, match="pip install detoxify"):
            make_scorer("detoxify:/nonexistent.ckpt")
