"""Lazy re-exports of a package's names (PEP 562): a package's ``__init__`` names what each submodule
exports, and a name's submodule is imported on the first access. Importing one light module of a package
(a settings dataclass, an error class) then does not import its heavy ones (torch, transformers, trl), so
that `decpo --help` and the parsers of the sub-commands stay fast."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` of the package ``package`` (its ``__name__``), whose
    ``exports`` map each submodule (``"decpo.config.run_config"``) to the names it exports.

    A name is imported from its submodule when first read and then kept in the package's namespace; any
    other name raises `AttributeError` (so that ``from package import submodule`` still imports it).
    """
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return sorted(where), __getattr__, __dir__
