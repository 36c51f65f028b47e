"""Data layer (imported as ``rlhf.data``): sources, presets, validation, encoding, split and preflight.

Stages depend on exactly this API:

    encoder = SFTEncoder(tokenizer, max_length)          # or PreferenceEncoder, RewardEncoder, PromptEncoder
    splits = load_splits(cfg, encoder)                    # rows, the trainer's features, the row ledger
    report = preflight(cfg, encoder); print(format_preflight(report))

Both read the source in chunks (`stream.scan`): memory stays bounded at any size. `splits.train` /
`splits.eval` are `Rows` (sequences of row dicts); `splits.train_features` / `eval_features` are
memory-mapped `datasets.Dataset`s, handed to the trainer as they are.

Rows are plain dicts in one of five canonical kinds (rank 0 = best, ties allowed), each text field
either a string (TRL's standard format) or a list of {"role", "content"} messages (conversational):
    sft:    {"prompt", "completion"} | {"messages": [...]} | {"text"}
    pair:   {"prompt", "chosen", "rejected", "margin"?}  (or implicit prompt: {"chosen", "rejected"})
    ranked: {"prompt", "responses": [...], "ranks": [...]}
    prompt: {"prompt"}  (TRL's prompt-only format: for the stages that sample)
    unpaired: {"prompt", "completion", "label": bool}  (TRL's unpaired format: KTO; from pairs: chosen -> true)
This package knows nothing of Hydra or stages; bad data raises `rlhf.errors.UserError`.
"""

from .config import DataConfig
from .encode import Encoded, Encoder, PreferenceEncoder, PromptEncoder, SFTEncoder, prompt_of
from .loader import Ledger, Splits, load_splits
from .preflight import format_preflight, preflight
from .reward_encode import RewardEncoder
from .spill import Rows
from .unpaired import UnpairedEncoder, label_counts

__all__ = [
    "DataConfig", "Encoded", "Encoder", "Ledger", "PreferenceEncoder", "PromptEncoder", "RewardEncoder", "Rows",
    "SFTEncoder", "Splits", "UnpairedEncoder", "format_preflight", "label_counts", "load_splits", "preflight",
    "prompt_of",
]
