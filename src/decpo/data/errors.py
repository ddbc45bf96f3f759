"""The one exception type of the data layer."""

from __future__ import annotations

from decpo.errors import DecPOError


class DataError(DecPOError, ValueError):
    """Bad or missing data.

    The message always says where the problem is: the file (or the Hub dataset and split,
    ``org/name:train``), the position inside it (``line N`` for JSONL, 1-based; ``row N (line L)`` for CSV,
    rows 1-based after the header, lines counting the header as line 1; ``item N`` for a JSON list, a Parquet
    file, a saved dataset or a Hub split, 0-based) and, where one is involved, the field.

    Args:
        message: what is wrong.
        where: the position, e.g. ``"data.jsonl line 3"``; prefixed to the message when given.
        field: the record field at fault; added to the message when given.
    """

    def __init__(self, message: str, *, where: str | None = None, field: str | None = None) -> None:
        self.where = where
        self.field = field
        self.reason = message
        text = message
        if field is not None:
            text = f"field {field!r}: {text}"
        if where is not None:
            text = f"{where}: {text}"
        super().__init__(text)
