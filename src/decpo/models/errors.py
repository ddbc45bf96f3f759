"""Errors about models: what cannot be found, loaded or hooked."""


class ModelError(ValueError):
    """A model that cannot be found, loaded or hooked as asked; the message lists what exists."""
