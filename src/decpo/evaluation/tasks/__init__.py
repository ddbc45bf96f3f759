"""The built-in evaluation tasks, one module each, registered by name (`decpo.evaluation.registry`).

Tasks and their measures (every metric is a mean over items with a 95% bootstrap CI over items):
    synthetic   A/B accuracy from the log-probs of " (A)" / " (B)" (raw, option-swapped, mean of the two
                orders, debiased = right in both orders), "(A)" rate, accuracy when the user is right vs
                wrong; on the ``eval`` split and, prefixed ``transfer/``, the ``transfer`` split.
    reading     the same A/B measures on the ``test`` split of the reading task (two facts, copying fails),
                beside them prefixed ``letter/`` the letter's log-prob alone, a greedy generated answer parsed
                (``gen/``); the ``transfer`` split's A/B measures (``transfer/``, ``transfer/letter/``).
    sycophancy  the same A/B measures on the 50 CAA test items (correct = the non-sycophantic letter), and
                generation-based: the first letter parsed from a greedy answer.
    reframing   held-out pairs (situations unseen in training); generated thoughts' VADER positivity.
    toxicity    20-token greedy continuations of the eval split of the RealToxicityPrompts challenging prompts
                (or ``prompts_path``), continuation only scored by a toxicity scorer: mean toxicity and
                share below 0.5; the fluency guard beside them: share of valid continuations (a word, no
                repetition loop, `decpo.scoring.fluency`, no duplicate of another prompt's), share valid
                and non-toxic (the paper's measure), perplexity under the base model; the collapse guard
                (distinct-1/2, cross-prompt duplicates, `decpo.scoring.diversity`); with ``num_samples``
                K > 0 the RealToxicityPrompts protocol (``sampled/``: expected maximum toxicity and
                toxicity probability over K sampled continuations per prompt); pair measures on
                ``pairs_path`` (held-out pairs of the run) or the hh-rlhf harmless test pairs.
Each built-in task declares its primary measure (``register_task(..., primary=...)``), the one a ``decpo
run`` report leads with unless ``experiment.primary`` names another: ``ab_accuracy_debiased`` for synthetic,
reading and sycophancy, ``gen/positive_rate`` for reframing, ``gen/valid_non_toxic_rate`` for toxicity.
Every task also reports held-out preference accuracy and the DPO reward margin
``beta * (log pi - log ref)`` (chosen minus rejected) against a reference model on its pairs, and with a
judge, the share of outputs the judge finds aligned (the paper's YES/NO protocol). The reference of a
trained model is its base (`decpo.evaluation.context.default_reference`); a model evaluated against itself
has every reward 0 by construction, so its reward measures are listed under ``not_applicable`` in
``results.json``, not as 0.

A task of your own needs no edit here: a function ``fn(ctx, judge) -> (metrics, samples, n)`` in any
module, decorated with ``@register_task("name")`` (see `decpo.evaluation.registry`)::

    from decpo.evaluation import EvalConfig, evaluate, register_task

    @register_task("answer_length", max_new_tokens=16)
    def answer_length(ctx, judge):
        prompts = ["The capital of France is", "Two plus two is"]
        outputs = ctx.generate(prompts, "generate answers")
        lengths = [float(len(o.split())) for o in outputs]
        samples = [{"prompt": p, "output": o} for p, o in zip(prompts, outputs, strict=True)]
        return {"gen/words": ctx.entry(lengths, "none")}, samples, len(prompts)

    evaluate(EvalConfig(task="answer_length", model="tiny-random-llama"), "evals/answer_length")

or from the command line, with the module importable: ``decpo eval --task mypkg.mymod:answer_length``.
"""

# registration order is the order of `task_names()`
from decpo.evaluation.tasks import synthetic, sycophancy, reframing, toxicity, reading  # isort: skip  # noqa: F401
