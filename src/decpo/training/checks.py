"""Pre-flight checks of a training run, before any data or model is loaded: the ``model`` section's loading
options and, with ``train.push_to_hub``, whether the Hub can take the upload."""

from __future__ import annotations

import huggingface_hub
from huggingface_hub import constants

from decpo.config import ConfigError
from decpo.hub import hub_unreachable
from decpo.models import ModelError, check_model_config


def check_model_options(m) -> None:
    """The ``model`` section's loading options (`decpo.models.check_model_config`: a valid
    ``attn_implementation``, bitsandbytes quantization where it can run); a `ConfigError` naming the key."""
    try:
        check_model_config(m)
    except ModelError as e:
        raise ConfigError(str(e)) from e


def check_hub_upload(args) -> None:
    """With ``train.push_to_hub``: a `ConfigError` at once, before any training, when the Hub cannot take the
    upload (offline mode, an unreachable endpoint, no token); the run would otherwise train and then fail (or
    retry) at its first upload."""
    if not args.push_to_hub:
        return
    what = f"train.push_to_hub=true (hub_model_id {args.hub_model_id or '<output folder name>'!r})"
    fix = "set train.push_to_hub=false and upload <run>/final later (`hf upload <repo> <run>/final`)"
    if constants.is_offline_mode():
        raise ConfigError(f"{what}, but HF_HUB_OFFLINE is set: the Hub is not asked; {fix}")
    problem = hub_unreachable(constants.ENDPOINT)
    if problem:
        raise ConfigError(f"{what}, but the Hub ({constants.ENDPOINT}) is unreachable: {problem}; {fix}")
    if not (args.hub_token or huggingface_hub.get_token()):
        raise ConfigError(f"{what} needs a Hugging Face token: `hf auth login`, $HF_TOKEN or train.hub_token")
