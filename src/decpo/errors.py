"""The base of every error decpo raises for bad user input (a config, a file, a model, a task, a job).

Each package's error derives from `DecPOError` (and from the built-in type its callers expect, e.g.
`ValueError`), so the command line catches one type and prints its message instead of a traceback.
"""


class DecPOError(Exception):
    """A user-facing error: its message says what is wrong and where (file, line, field or key)."""
