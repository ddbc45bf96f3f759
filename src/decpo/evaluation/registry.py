"""The registry of evaluation tasks: a name and the function that evaluates a model on it.

A task is a function ``fn(ctx, judge) -> (metrics, samples, n)``:
    ctx      an `decpo.evaluation.context.EvalContext`: the config (``ctx.cfg``), the loaded policy and
             tokenizer, the reference (``ctx.reference()``), ``ctx.generate(prompts, desc)`` and
             ``ctx.entry(values, direction)`` (a metric entry: mean and 95% bootstrap CI over items);
    judge    the YES/NO judge of ``cfg.judge``, or None;
    metrics  name -> metric entry (``ctx.entry(...)``), written to ``results.json``;
    samples  JSON-able dicts, one line each of ``samples.jsonl``;
    n        the number of evaluated items.
The shared measures of the built-in tasks (A/B accuracy, held-out preference accuracy and reward margin,
the judge's aligned rate) are in `decpo.evaluation.measures`.

``@register_task("name", primary="measure")`` registers one and declares its primary measure (the one a
``decpo run`` report leads with when ``experiment.primary`` is null), and ``evaluate(EvalConfig(task="name",
...), out)`` runs it; from the command line ``decpo eval --task mypkg.mymod:name`` imports ``mypkg.mymod``
(whose decorators register its tasks) and runs its task ``name``. The built-in tasks
(`decpo.evaluation.tasks`) are registered on the first look-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from decpo.errors import DecPOError
from decpo.names import did_you_mean

# The registry is the bottom of the evaluation package: the config checks task names against it and the
# tasks register into it, so it names neither `EvalConfig` nor `EvalContext` (the ``Any`` below).
TaskOutput = tuple[dict[str, dict[str, Any]], list[dict[str, Any]], int]
TaskFn = Callable[[Any, Any], TaskOutput]  # (EvalContext, judge or None) -> (metrics, samples, n)
# EvalConfig -> what it read (handed to the task as ``ctx.checked``, so that a file is read once) or None,
# raising on missing or malformed data
DataCheck = Callable[[Any], Any]

BUILTIN_TASKS_MODULE = "decpo.evaluation.tasks"
# the names its modules register, in order, for help texts that must not import them (torch);
# tests/test_eval_registry.py checks them against `task_names()`
BUILTIN_TASK_NAMES = ("synthetic", "sycophancy", "reframing", "toxicity", "reading")
DEFAULT_MAX_NEW_TOKENS = 64  # the paper's generation length


class EvalError(DecPOError, ValueError):
    """A bad evaluation request (unknown task, bad limit, ...)."""


@dataclass(frozen=True)
class Task:
    """One registered evaluation task."""

    name: str
    run: TaskFn
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS  # when ``EvalConfig.max_new_tokens`` is None
    # fails on missing data before any model is loaded (a clear DataError naming the expected files)
    check_data: DataCheck | None = None
    quick: bool = False  # honours ``EvalConfig.quick`` (the A/B measures of the evaluated split alone)
    # the measure (a metric name of results.json) the task's primary outcome is, declared before any run;
    # None: the task declares none
    primary: str | None = None


TASKS: dict[str, Task] = {}  # name -> task, in the order of registration
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True  # first: the built-in modules register through `register_task`
    try:
        importlib.import_module(BUILTIN_TASKS_MODULE)
    except BaseException:
        _builtins_loaded = False
        raise


def _where(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def register_task(
    name: str,
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    check_data: DataCheck | None = None,
    quick: bool = False,
    primary: str | None = None,
    replace: bool = False,
) -> Callable[[TaskFn], TaskFn]:
    """Decorator: register ``fn(ctx, judge) -> (metrics, samples, n)`` as the evaluation task ``name``.

    ``max_new_tokens``: the task's generation length when the config gives none; ``check_data(cfg)``: raise
    on missing data before any model is loaded (what it returns, the task finds as ``ctx.checked``); ``quick``:
    the task honours ``EvalConfig.quick`` (a config asking a task without it for a quick evaluation is an
    EvalError, not a full one); ``primary``: the metric
    that is the task's primary outcome (`decpo.reports.primary`). A name already taken by another function is
    an EvalError unless ``replace`` (registering the same function again, e.g. on a re-import, is fine).
    """
    if not name or ":" in name:
        raise EvalError(f"task name {name!r}: must be non-empty and without ':'")

    def decorator(fn: TaskFn) -> TaskFn:
        _load_builtins()  # a user's task never silently takes a built-in's name
        old = TASKS.get(name)
        if old is not None and not replace and _where(old.run) != _where(fn):
            raise EvalError(
                f"task {name!r} is already registered by {_where(old.run)}; pass replace=True to replace it"
            )
        TASKS[name] = Task(name, fn, max_new_tokens, check_data, quick, primary)
        return fn

    return decorator


def task_names() -> tuple[str, ...]:
    """The registered tasks' names, the built-in ones first."""
    _load_builtins()
    return tuple(TASKS)


def _suggestion(name: str) -> str:
    return did_you_mean(name, task_names())


def get_task(name: str) -> Task:
    """The task registered as ``name``; ``module:name`` imports ``module`` first (its decorators register its
    tasks). EvalError for an unknown name, suggesting the closest registered one: a plain name neither built in
    nor registered is refused before the built-in tasks load (they import torch)."""
    if ":" not in name and name not in BUILTIN_TASK_NAMES and name not in TASKS:
        raise _unknown_task(name)
    _load_builtins()
    if name in TASKS:
        return TASKS[name]
    if ":" in name:
        module, _, short = name.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise EvalError(f"task {name!r}: cannot import module {module!r}: {e}") from e
        if short in TASKS:
            return TASKS[short]
        raise EvalError(f"task {name!r}: module {module!r} registers no task {short!r}{_suggestion(short)}")
    raise _unknown_task(name)


def _unknown_task(name: str) -> EvalError:
    """The error for a plain task name no task has; the names it lists are `task_names()`, known without loading
    the built-in tasks (`BUILTIN_TASK_NAMES`, then the tasks registered since)."""
    names = (*BUILTIN_TASK_NAMES, *(n for n in TASKS if n not in BUILTIN_TASK_NAMES))
    return EvalError(
        f"unknown task {name!r}{did_you_mean(name, names)} (registered: {', '.join(names)}; a task of your own: "
        "module:name, see decpo.evaluation.registry)"
    )
