"""Data layer: preference pairs, the paper's task loaders and the built-in synthetic and reading tasks."""

from decpo.data.errors import DataError
from decpo.data.pairs import chat_messages, load_pairs, split_train_eval, validate_pair
from decpo.data.reading import make_reading
from decpo.data.synthetic import make_synthetic, swap_options
from decpo.data.tasks import TASKS, load_rtp_prompts, load_task, resolve_data_dir

__all__ = [
    "TASKS",
    "DataError",
    "chat_messages",
    "load_pairs",
    "load_rtp_prompts",
    "load_task",
    "make_reading",
    "make_synthetic",
    "resolve_data_dir",
    "split_train_eval",
    "swap_options",
    "validate_pair",
]
