"""The Hugging Face Hub as models and data see it: is a spec a local path or a Hub id, and can the Hub be reached.

One check for both, so that a model id and a dataset id without network fail the same way: at once, naming
the id, instead of after a minute of retries.
"""

from __future__ import annotations

import functools
import os
import socket
import urllib.parse


def looks_like_path(name: str) -> bool:
    """A spec meant as a local path, never a Hub id: it starts with /, ./, ../ or ~, or holds more than one /
    (a Hub id is ``name`` or ``org/name``) or a backslash on Windows."""
    return (
        name.startswith(("/", "./", "../", "~"))
        or name in (".", "..")
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_offline_mode() -> bool:
    """HF_HUB_OFFLINE is set: the Hub is not to be asked (the local caches still are)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


@functools.lru_cache(maxsize=8)
def hub_unreachable(endpoint: str, timeout_s: float = 3.0) -> str | None:
    """None when a TCP connection to the Hub endpoint opens within ``timeout_s``, else why not."""
    url = urllib.parse.urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return None
    except OSError as e:
        return f"cannot connect to {url.hostname}:{port} ({e})"
