"""What makes a saved model give the framework's numbers with plain transformers / peft / TRL.

Applied to the files `rlhf.run.saving.save_model` wrote, never to the live tokenizer or model (the stage
keeps using them after saving):

- a reward model's tokenizer frames and truncates `(prompt, response)` exactly as training did
  (`rlhf.data.RewardEncoder`): its fast post-processor writes the reward frame (``[own specials,
  BOS if `model.add_bos`] prompt response [EOS] [own specials]``, one token type), `truncation_side="left"` and
  `model_max_length` = the training length cut the prompt from its start, so `REWARD_CALL` gives the
  framework's ids whenever the response fits; its config says `problem_type="regression"` (one raw
  score: `pipeline("text-classification")` applies no sigmoid) and carries a `reward_name`, which
  also names a link beside `model/`: TRL's GRPO names a reward model passed by path after the path's
  last component, so every `<run>/model` would be called "model";
- an adapter's `adapter_config.json` names its base relative to the adapter folder (when the base is
  a local folder), so a copied runs tree still finds it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

# The one line that scores like the framework (a response longer than max_length minus the frame's
# special tokens is refused by the tokenizer: the framework keeps that response's start instead).
REWARD_CALL = 'tokenizer(prompt, response, truncation="only_first", return_tensors="pt")'


def export_reward_model(model_dir: Path, tokenizer, max_length: int, name: str) -> None:
    """Rewrite the tokenizer and config files of the reward model saved in `model_dir` (see module doc)."""
    from tokenizers import Tokenizer, processors

    from rlhf.data.encode import CHAT_FRAME_KEY
    from rlhf.data.reward_encode import RewardEncoder

    model_dir = Path(model_dir)
    enc = RewardEncoder(tokenizer, max_length)
    pre = tokenizer.convert_ids_to_tokens(enc.frame.prefix)
    post = tokenizer.convert_ids_to_tokens(enc.frame.suffix)
    specials = sorted(set(zip(pre + post, enc.frame.prefix + enc.frame.suffix, strict=True)))
    backend = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    backend.post_processor = processors.TemplateProcessing(
        single=[*pre, "$A:0", *post], pair=[*pre, "$A:0", "$B:0", *post], special_tokens=specials)
    backend.no_truncation()  # truncation is asked for per call (REWARD_CALL)
    backend.save(str(model_dir / "tokenizer.json"))
    _update_json(model_dir / "tokenizer_config.json", {
        # the generic fast class keeps the post-processor of tokenizer.json (BertTokenizer, for one,
        # rebuilds its own [CLS] A [SEP] B [SEP] on load)
        "tokenizer_class": "PreTrainedTokenizerFast",
        "truncation_side": "left",
        "model_max_length": int(max_length),
        CHAT_FRAME_KEY: {"prefix": enc.chat_frame.prefix, "suffix": enc.chat_frame.suffix},
    }, drop=("truncation_strategy", "max_length"))
    _update_json(model_dir / "config.json", {"problem_type": "regression", "reward_name": name})


def reward_name(experiment: str, run_dir: Path) -> str:
    """A name for a reward model, distinct across runs: `rm-<experiment>-<run dir name>`, safe as a
    file name and as a metric name."""
    return "rm-" + re.sub(r"[^A-Za-z0-9._-]+", "-", f"{experiment}-{Path(run_dir).name}").strip("-.")


def link_reward_name(run_dir: Path, model_dir: str, name: str) -> str | None:
    """`<run_dir>/<name>` -> `model_dir` (a relative link), the path to give TRL so it logs the
    reward as `rewards/<name>/...`; None where the file system has no links."""
    link = Path(run_dir) / name
    try:
        if link.is_symlink():
            link.unlink()
        link.symlink_to(model_dir, target_is_directory=True)
    except OSError as e:
        log.warning("no link %s -> %s (%s): load the reward model from %s/%s and set its "
                    "config.name_or_path to %r to name it in TRL", link, model_dir, e, run_dir, model_dir, name)
        return None
    return name


def portable_base(base: str, adapter_dir: Path) -> str:
    """`base` as adapter_config.json should name it: a local folder relative to the adapter folder,
    anything else (a hub id) as it is."""
    if Path(base).is_dir():
        return os.path.relpath(Path(base).resolve(), Path(adapter_dir).resolve())
    return base


def export_adapter(adapter_dir: Path, base: str) -> str:
    """Point adapter_config.json at `base` (made portable); returns what it now says."""
    adapter_dir = Path(adapter_dir)
    value = portable_base(base, adapter_dir)
    _update_json(adapter_dir / "adapter_config.json", {"base_model_name_or_path": value})
    return value


def _update_json(path: Path, values: dict, drop: tuple[str, ...] = ()) -> None:
    data = json.loads(Path(path).read_text())
    for key in drop:
        data.pop(key, None)
    data.update(values)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
