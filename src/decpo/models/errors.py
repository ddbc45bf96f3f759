"""Errors about models: what cannot be found, loaded or hooked."""

from decpo.errors import DecPOError


class ModelError(DecPOError, ValueError):
    """A model that cannot be found, loaded or hooked as asked; the message lists what exists."""
