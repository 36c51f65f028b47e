"""What a stage reads before it trains: its data (validated, encoded, split) and the policy's source,
artifact and tokenizer (`policy_inputs`, the prologue the policy stages share), the distinct prompts
the sampling stages draw from, and the row ledger for metrics.json."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf

from ..errors import UserError

log = logging.getLogger(__name__)


def data_config(node):
    from rlhf.data import DataConfig

    return DataConfig.from_mapping(OmegaConf.to_container(node, resolve=True))


def load_data(cfg: DictConfig, encoder):
    """Validated and encoded train/eval rows of the stage's data config (raises UserError listing bad
    rows, or drops them under data.on_invalid=drop); `splits.train_features` is what the trainer gets."""
    from rlhf.data import load_splits

    splits = load_splits(data_config(cfg.data), encoder)
    from ..run import fingerprint

    fingerprint.remember(cfg, splits)  # what this run trains on: checked on resume, recorded (rlhf.run.fingerprint)
    led = splits.ledger
    if led.dropped:
        log.warning("dropped %d invalid rows (data.on_invalid=drop): %s", sum(led.dropped.values()),
                    ", ".join(f"{k}={v}" for k, v in sorted(led.dropped.items())))
    log.info("data %s: %d records -> %d rows, %d valid: %d train / %d eval %s rows (%d / %d truncated: %s); "
             "distinct prompts %d train / %d eval, %d on both sides", splits.source, led.read, led.rows, led.valid,
             led.train, led.eval, splits.kind, led.truncated_train, led.truncated_eval, encoder.rule,
             led.prompts_train, led.prompts_eval, led.prompts_shared)
    if not splits.train:
        raise UserError(f"data: no training rows left in {splits.source}")
    return splits


# The row kinds of the stages that sample from prompts: every kind offers prompts (rlhf.data.PromptEncoder.kinds;
# kept here as plain names so a stage's module does not import the data layer at start-up).
PROMPT_KINDS = ("sft", "pair", "ranked", "prompt", "unpaired")


def prompt_encoder(cfg: DictConfig, tokenizer):
    """The encoder of the stages that sample from prompts (generate, eval, ppo, grpo, rloo)."""
    from rlhf.data import PromptEncoder

    return PromptEncoder(tokenizer, int(cfg.model.max_length))


def row_metrics(splits, trained: int, evaluated: int) -> dict[str, Any]:
    """The row ledger for metrics.json: read -> valid -> dropped by reason -> truncated -> trained;
    `trained`/`evaluated` are the lengths of the datasets the trainer holds."""
    splits.ledger.trained, splits.ledger.evaluated = trained, evaluated
    led = splits.ledger
    return {"rows": led.as_dict(), "train_rows": led.train, "eval_rows": led.eval, "dropped_rows": dict(led.dropped),
            "truncated_rows": led.truncated_train + led.truncated_eval}


class PolicyInputs(NamedTuple):
    """What a stage starts from: the weights' source (a model path), the artifact it came from (None for
    a base model), its tokenizer, and the data splits encoded by the stage's encoder."""

    source: str
    artifact: Any
    tokenizer: Any
    splits: Any


def policy_inputs(cfg: DictConfig, encoder, kinds: tuple[str, ...] = ("policy",)) -> PolicyInputs:
    """The shared prologue: `model.init_from`'s artifact (of one of `kinds`) or `model.name_or_path`,
    its tokenizer, then the rows encoded by `encoder(cfg, tokenizer)` (raises UserError on bad rows)."""
    from ..models import load_tokenizer, resolve_source

    source, art = resolve_source(cfg.model, kinds)
    tokenizer = load_tokenizer(cfg.model, source)
    return PolicyInputs(source, art, tokenizer, load_data(cfg, encoder(cfg, tokenizer)))


def train_prompts(splits) -> tuple[list, list[list[int]]]:
    """The distinct prompts of the train split and their ids, in order: what the online RL stages
    (ppo, grpo, rloo) sample from."""
    return distinct_prompts(splits.train, splits.train_features)


def distinct_prompts(rows, features) -> tuple[list, list[list[int]]]:
    """The distinct prompts of encoded rows (first occurrence order) and their ids."""
    from rlhf.data import prompt_of

    seen: dict[str, int] = {}
    prompts, ids = [], []
    for row, feat in zip(rows, features, strict=True):
        p = prompt_of(row)
        key = repr(p)
        if key not in seen:
            seen[key] = len(prompts)
            prompts.append(p)
            ids.append(feat["prompt_ids"])
    return prompts, ids
