"""Does the base model read? The embedded model's number-only answer to two-fact questions, by fact layout.

For each layout, 32 seeded items ``Fact: <two facts>\\nQuestion: <about the first>\\nAnswer:`` (no claim line,
no options; the fact order alternates), and the share where the asked fact's number gets a higher log-prob
than the other fact's number after ``Answer:``. Layouts: two frames about two subjects (the reading task's),
two facts of one frame about two subjects, two frames about one subject. Run alone (about 2 minutes on
2 cores)::

    python benchmarks/reading_base.py
"""

from __future__ import annotations

import random

import torch

from decpo.data.reading import FRAMES
from decpo.data.synthetic import NAMES, THINGS
from decpo.models.loading import load_model, load_tokenizer

N = 32
LAYOUTS = ("two frames, two subjects", "one frame, two subjects", "two frames, one subject")


def answer_logp(model, tok, prompt: str, answer: str) -> float:
    n = len(tok(prompt).input_ids)
    full = tok(prompt + answer, return_tensors="pt").input_ids
    with torch.no_grad():
        logp = model(full).logits.log_softmax(-1)
    return sum(logp[0, i - 1, full[0, i]].item() for i in range(n, full.shape[1]))


def main() -> None:
    model, tok = load_model("default"), load_tokenizer("default")
    model.eval()
    rng = random.Random(1)
    for layout in LAYOUTS:
        right = 0
        for k in range(N):
            frames = ["count", "age", "score"]
            f1, f2 = [rng.choice(frames)] * 2 if layout.startswith("one frame") else rng.sample(frames, 2)
            s1, s2 = rng.sample(NAMES, 2)
            s2 = s1 if layout.endswith("one subject") else s2
            n1, n2 = rng.sample(range(5, 99), 2)
            thing = rng.choice(THINGS)
            facts = [FRAMES[f1][0].format(s=s1, n=n1, t=thing), FRAMES[f2][0].format(s=s2, n=n2, t=thing)]
            if k % 2:
                facts.reverse()
            prompt = f"Fact: {' '.join(facts)}\nQuestion: {FRAMES[f1][2].format(s=s1, t=thing)}\nAnswer:"
            right += answer_logp(model, tok, prompt, f" {n1}") > answer_logp(model, tok, prompt, f" {n2}")
        print(f"{layout}: {right / N:.3f} of {N} items", flush=True)


if __name__ == "__main__":
    main()
