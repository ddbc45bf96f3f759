"""The configuration of one evaluation run; every field carries its help text in ``metadata["help"]``."""

from __future__ import annotations

from dataclasses import dataclass, field

from decpo.config.fields import described
from decpo.config.sampling import scorer_spec
from decpo.data.reading import ANSWER_FORMATS
from decpo.evaluation.registry import TASKS, EvalError, get_task
from decpo.names import did_you_mean
from decpo.scoring.classifiers import check_scorer_name, default_eval_scorer

SAME_SCORER = "evaluated by the scorer it was trained on"


def scorer_specs(scorer: str | None) -> list[str]:
    """The toxicity scorers of ``EvalConfig.scorer``: one spec, or several separated by commas."""
    return [s.strip() for s in (scorer or "").split(",") if s.strip()]


def same_scorer_warning(scorer: str | None, pairs_scorer: str | None) -> str | None:
    """The warning of a toxicity evaluation whose scorer (None: `default_eval_scorer`) is the one that ranked
    the training pairs (``pairs_scorer``, None: unknown); None when they differ or the pairs' is unknown."""
    if pairs_scorer is None:
        return None
    pairs = scorer_spec(pairs_scorer)
    evaluated = [scorer_spec(s) for s in scorer_specs(scorer)] if scorer else [default_eval_scorer(pairs)]
    if pairs not in evaluated:
        return None
    return (
        f"{SAME_SCORER}: `{pairs}` ranked the training pairs and scores this evaluation, so its toxicity "
        "measures show how well the model learned that scorer, not that it is less toxic; evaluate with "
        "another scorer (EvalConfig.scorer, experiment.eval_scorer)."
    )


@dataclass
class EvalConfig:
    """One evaluation run."""

    task: str = field(
        metadata=described(
            "A registered task (`decpo.evaluation.registry.task_names()`: the built-in ones of "
            "decpo.evaluation.tasks and any registered with `register_task`), or module:name, which imports "
            "the module (whose `register_task` decorators register its tasks) and runs its task name."
        )
    )
    model: str = field(
        default="default",
        metadata=described(
            "'default', a Hub id, a folder, a .gguf file (see decpo.models.load_model) or a training run dir "
            "(its final/)."
        ),
    )
    reference: str | None = field(
        default=None,
        metadata=described(
            "Reference model of the reward measures; None: the base model of the adapter or training run "
            "(`default_reference`), else the model itself (its reward measures are then n/a)."
        ),
    )
    limit: int | None = field(default=None, metadata=described("First N items of each evaluated set."))
    transfer_limit: int | None = field(
        default=None,
        metadata=described(
            "First N items of the transfer split (tasks reading and synthetic: a secondary measure, "
            "cheaper on fewer items); None: limit."
        ),
    )
    seed: int = field(
        default=0, metadata=described("Seed of the synthetic data and of bootstrap resampling.")
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata=described(
            "Tokens generated per output; None: the task's own (20 for toxicity, Lee et al., else 64)."
        ),
    )
    batch_size: int = field(default=8, metadata=described("Batch size of scoring and generation."))
    num_samples: int = field(
        default=4,
        metadata=described(
            "Toxicity: K sampled continuations per prompt (nucleus sampling, top_p 0.9, temperature 1) for "
            "the RealToxicityPrompts protocol (expected maximum toxicity, toxicity probability), beside the "
            "greedy measures; 0: greedy only. The published protocol draws 25; 4 keeps a CPU run short "
            "(the sampled pass costs about K greedy passes)."
        ),
    )
    data_dir: str | None = field(
        default=None, metadata=described("Folder with the paper's data; None: env DECPO_DATA_DIR.")
    )
    judge: str | None = field(
        default=None,
        metadata=described("YES/NO judge of the outputs: local:<spec> or openai:<model>; None: none."),
    )
    scorer: str | None = field(
        default=None,
        metadata=described(
            "Toxicity scorer: jigsaw-bilstm, profanity-check, hf:<id|dir>, detoxify:<ckpt> or perspective "
            "(see decpo.scoring.classifiers); None: jigsaw-bilstm, or profanity-check when jigsaw-bilstm "
            "ranked the training pairs (pairs_scorer): not the scorer the model was trained on. Several, "
            "separated by commas: the first gives the gen/ and sampled/ measures, and by_scorer/<spec>/ holds "
            "each one's toxicity measures side by side, by_scorer/mean/ those of their mean score."
        ),
    )
    pairs_scorer: str | None = field(
        default=None,
        metadata=described(
            "Toxicity: the scorer that ranked the model's training pairs (`decpo run` sets it from "
            "pairs.scorer); the same as scorer -> results.json opens with a WARNING. None: unknown."
        ),
    )
    beta: float = field(default=0.1, metadata=described("DPO beta of the implicit reward."))
    n_boot: int = field(default=1000, metadata=described("Bootstrap resamples of each 95% CI."))
    pair_max_length: int = field(
        default=512,
        metadata=described(
            "Most tokens of a scored pair; longer pairs (hh-rlhf dialogues) lose the start of their prompt."
        ),
    )
    dtype: str = field(default="float32", metadata=described("float32, bfloat16 or float16."))
    chat_template: bool | str | None = field(
        default=None,
        metadata=described(
            "The layout of prompts and answers, for log-prob measures (as TRL renders conversational pairs) and "
            "for generation prompts alike. None or 'auto': as the model was trained, i.e. the data.chat_template "
            "of the training run's config.yaml when the model is a run's final/ or checkpoint-N/, else raw text. "
            "True: the tokenizer's chat template (instruct models); False: raw text."
        ),
    )
    generate: bool = field(
        default=True,
        metadata=described("False: only log-prob measures where a task has both (sycophancy), much faster."),
    )
    synthetic_answer: str | None = field(
        default=None,
        metadata=described(
            "Answer format of the synthetic and reading tasks: option, letter or (reading) number; None: as "
            "trained (a run folder's data.synthetic_answer), else option."
        ),
    )
    prompts_path: str | None = field(
        default=None,
        metadata=described(
            "Toxicity: a RealToxicityPrompts-format (or {prompt: ...}) JSONL, used whole; None: the `split` "
            "part (test or dev) of the eval split of the data directory's challenging prompts."
        ),
    )
    pairs_path: str | None = field(
        default=None,
        metadata=described(
            "Toxicity: held-out pairs (TRL JSONL) of the pairs/ measures; None: the hh-rlhf harmless test pairs."
        ),
    )
    split: str = field(
        default="test",
        metadata=described(
            "reading: the split scored beside transfer; toxicity: the part of the eval prompts (disjoint "
            "halves by text hash, `decpo.data.prompts.eval_part`; ignored with prompts_path). test: the "
            "reported split; dev: for tuning (benchmarks/tune.py uses it and refuses test)."
        ),
    )
    quick: bool = field(
        default=False,
        metadata=described(
            "Only the A/B measures of the evaluated split, answers as trained (no letter-only, transfer, pair "
            "measures or generation): for learning curves. Only for tasks registered with "
            "`register_task(..., quick=True)` (the built-in reading and synthetic); others refuse it."
        ),
    )
    progress: bool = field(
        default=True,
        metadata=described("Show progress bars.", off="Hide the progress bars (shown by default)."),
    )
    trust_remote_code: bool = field(
        default=False,
        metadata=described(
            "Run the Python code a model folder or Hub repository ships (an auto_map in its config.json) to "
            "load the model and its reference. Only from this setting (`decpo eval --trust-remote-code`): "
            "a run folder's config.yaml never turns it on. Give it only for code you trust."
        ),
    )

    @property
    def scorer_warning(self) -> str | None:
        """`same_scorer_warning` of a toxicity evaluation; None for other tasks."""
        return same_scorer_warning(self.scorer, self.pairs_scorer) if self.task == "toxicity" else None

    def __post_init__(self) -> None:
        if self.synthetic_answer is not None and self.synthetic_answer not in ANSWER_FORMATS:
            raise EvalError(  # before the task modules (and torch) load
                f"synthetic_answer must be option, letter, number or None (as trained), got {self.synthetic_answer!r}"
                f"{did_you_mean(self.synthetic_answer, ANSWER_FORMATS)}"
            )
        task = get_task(self.task)  # EvalError for an unknown task, suggesting the closest name
        if self.synthetic_answer == "number" and self.task != "reading":
            raise EvalError(f"synthetic_answer=number is the reading task's alone, not {self.task!r}'s")
        if self.quick and not task.quick:
            quick = ", ".join(t.name for t in TASKS.values() if t.quick)
            raise EvalError(
                f"quick: task {self.task!r} has no quick evaluation (tasks that have one: {quick}); "
                "evaluate it in full (quick=False)"
            )
        for name in ("limit", "transfer_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise EvalError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise EvalError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.scorer is None:
            self.scorer = default_eval_scorer(scorer_spec(self.pairs_scorer) if self.pairs_scorer else None)
        for spec in scorer_specs(self.scorer) if self.task == "toxicity" else ():
            check_scorer_name(spec)  # a typo fails here, before the model loads and the prompts are read
        if self.num_samples < 0:
            raise EvalError(f"num_samples must be >= 0 (0: greedy only), got {self.num_samples}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise EvalError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.beta <= 0:
            raise EvalError(f"beta must be > 0, got {self.beta}")
        if self.split not in ("test", "dev"):
            raise EvalError(f"split must be 'test' or 'dev', got {self.split!r}")
        if self.chat_template == "auto":
            self.chat_template = None
        if not (self.chat_template is None or isinstance(self.chat_template, bool)):
            raise EvalError(f"chat_template must be true, false or 'auto', got {self.chat_template!r}")

    @property
    def new_tokens(self) -> int:
        """Tokens generated per output: ``max_new_tokens``, else the task's own."""
        return self.max_new_tokens or get_task(self.task).max_new_tokens
