"""Can each reward model a run uses score its policy's text? Decided before any model loads, from
tokenizer files only (`tokenizer.json` & co. and `artifact.json`, never weights), for every reward
model of a run or of every step of a pipeline (`rlhf.config.validate`, `rlhf.pipeline`).

A reward model with ANOTHER tokenizer than the policy is not by itself a problem: it scores decoded
text, re-tokenised by its own tokenizer (`rlhf.reward.RewardScorer`). What is refused is only what
cannot work:

- coverage: its tokenizer cannot represent the policy's text. The probe is the policy's vocabulary
  decoded piece by piece (pieces that are partial UTF-8 bytes, whitespace or control characters
  skipped; at most `PROBE_PIECES`, evenly spaced); a piece is lost when the reward model's tokenizer maps it to its unknown token or its
  round trip (encode -> decode) loses characters, compared after Unicode NFKD with accents, case,
  whitespace and control characters removed (what a BERT-style normaliser drops on purpose). More
  than `LOST_SHARE` of the pieces lost is refused.
- conversation format: the policy's prompts are conversations (`data.conversational: true`, or
  `auto` with a chat template and a dialogue preset) but the reward model has no chat template.
  (Plain-text-looking rows that are message lists are seen only when the data is read: the stage
  refuses those after loading, `rlhf.stages.evaluator.reward_scorer`.)
- length: its `max_length` (less its sequence frame: BOS/EOS) cannot hold the longest response the
  stage samples for training (PPO `trainer.max_new_tokens`, GRPO/RLOO `trainer.max_completion_length`,
  generate `stage.generation.max_new_tokens`), counted in its own tokens: policy tokens x the ratio of
  its tokens to the policy's on the probe text (1 for one vocabulary). The prompt is cut from its
  start by design (`rlhf.data.reward_encode.fit`), so only the response must fit; the evaluation's
  `max_new_tokens` is a cap samples seldom reach (they end at EOS) and is not held against it.

The reward models checked: `stage.reward_model` (PPO, GRPO/RLOO, generate; an ensemble: each member),
`evaluation.reward_model` and the run dirs among `evaluation.audit_reward_models` of a policy stage
with the evaluation on. A run dir without an artifact is a later pipeline step's: `rlhf.pipeline`
passes the steps it plans (`planned`), whose tokenizer is the one their `model:` node will load.
"""

from __future__ import annotations

import functools
import unicodedata
from pathlib import Path
from typing import Any

from ..errors import UserError
from .artifacts import MANIFEST, read_artifact

PROBE_PIECES = 4096  # pieces of the policy's vocabulary probed (evenly spaced): a 50k vocabulary in about a second
LOST_SHARE = 0.01  # a few exotic pieces (emoji in a BERT vocabulary) do not stop a reward model scoring; more do
DIALOGUE_FORMATS = ("hh_rlhf", "oasst_trees")  # presets that give conversations under data.conversational=auto
RESPONSE_KEYS = ("stage.generation.max_new_tokens", "trainer.max_new_tokens", "trainer.max_completion_length")


class Side:
    """One tokenizer, where it came from and (for a reward model) its training length."""

    def __init__(self, tokenizer, where: str, max_length: int | None = None):
        self.tokenizer, self.where, self.max_length = tokenizer, where, max_length


def problems(cfg, policy_text: bool, planned: dict[str, Any] | None = None) -> list[str]:
    """What each reward model of `cfg` cannot score (module docstring), one line each naming the config
    key, the reward model's run dir, the policy's and what differs. `policy_text`: the stage writes
    text with a causal LM (its evaluation scores it). `planned`: {resolved run dir: step config} of a
    pipeline; given, only what `rlhf.config.validate` could not see is checked: reward models that are
    planned steps without an artifact yet, and every reward model of a step whose policy is planned.
    Problems this check cannot decide (a missing artifact, a damaged manifest, tokenizer or config
    file) are left to the checks that own them, which name the file in one line."""
    rms = reward_models(cfg, policy_text)
    if planned is not None:  # what validation could not see: a planned policy, or a planned reward model
        try:
            known = _tokenizer_path(cfg.model, {}) is not None
        except UserError:
            known = False
        rms = [(k, d) for k, d in rms if not known or (not (Path(d) / MANIFEST).is_file() and _key(d) in planned)]
    if not rms:
        return []
    try:
        policy = _policy_side(cfg.model, planned or {})
    except Exception:  # noqa: BLE001 - a damaged or missing tokenizer/config: its own check says so, in one line
        return []
    if policy is None:
        return []
    out = []
    for key, run_dir in rms:
        try:
            rm = _reward_side(run_dir, key, planned or {})
        except Exception:  # noqa: BLE001 - as above (e.g. a damaged config.json the tokenizer loader reads)
            continue
        if rm is not None:
            out += [f"{key}: the reward model {run_dir} cannot score the text of the policy {policy.where}: {why}"
                    for why in _why(cfg, key, policy, rm)]
    return out


def reward_models(cfg, policy_text: bool) -> list[tuple[str, str]]:
    """(config key, run dir) of every reward model `cfg` uses; an ensemble's members each."""
    out = []
    st, ev = cfg.stage, cfg.evaluation
    if st.get("reward_model"):
        out.append(("stage.reward_model", str(st.reward_model)))
    if policy_text and ev.get("enabled"):
        if ev.get("reward_model"):
            out.append(("evaluation.reward_model", str(ev.reward_model)))
        for i, spec in enumerate(ev.get("audit_reward_models") or []):
            if "/" in str(spec) or str(spec).startswith((".", "~")):  # a run dir, not a judge's name
                out.append((f"evaluation.audit_reward_models[{i}]", str(spec)))
    with_members = []
    for key, d in out:
        with_members.append((key, d))
        try:
            art = read_artifact(d, what=key) if (Path(d).expanduser() / MANIFEST).is_file() else None
        except UserError:
            art = None
        for i, m in enumerate((art.extra.get("ensemble") or []) if art is not None else []):
            with_members.append((f"{key} (member {i})", str(Path(art.run_dir) / m)))
    return with_members


def _key(run_dir) -> str:
    return str(Path(str(run_dir)).expanduser().resolve())


def _tokenizer_path(model_cfg, planned: dict[str, Any]) -> str | None:
    """Where `load_tokenizer(model_cfg, source)` will read the tokenizer from: `model.tokenizer`, the
    `init_from` artifact's tokenizer, a planned step's (followed down its own init_from), or
    `model.name_or_path`; None when init_from names nothing there is or will be."""
    if model_cfg.get("tokenizer"):
        return str(model_cfg.tokenizer)
    init = model_cfg.get("init_from")
    if not init:
        return str(model_cfg.name_or_path)
    if (Path(str(init)).expanduser() / MANIFEST).is_file():
        art = read_artifact(str(init))
        return str(art.path(art.tokenizer_dir or art.model_dir))
    step = planned.get(_key(init))
    return _tokenizer_path(step.model, planned) if step is not None else None


def _policy_side(model_cfg, planned: dict[str, Any]) -> Side | None:
    from ..models import load_tokenizer

    path = _tokenizer_path(model_cfg, planned)
    if path is None:
        return None
    return Side(load_tokenizer(model_cfg, path), str(model_cfg.get("init_from") or model_cfg.name_or_path))


def _reward_side(run_dir: str, key: str, planned: dict[str, Any]) -> Side | None:
    from ..models import artifact_tokenizer, load_tokenizer

    if (Path(run_dir).expanduser() / MANIFEST).is_file():
        art = read_artifact(run_dir, what=key)  # no expected kind: that would read the weights
        if art.kind != "reward" or not art.tokenizer_dir:
            return None  # said by the stage's own check of the artifact
        tok = artifact_tokenizer(art, key)
        limits = [art.extra.get("max_length"), tok.model_max_length]
        return Side(tok, run_dir, min((x for x in limits if isinstance(x, int) and x > 0), default=None))
    step = planned.get(_key(run_dir))
    if step is None:
        return None
    path = _tokenizer_path(step.model, planned)
    return None if path is None else Side(load_tokenizer(step.model, path), run_dir, int(step.model.max_length))


def _why(cfg, key: str, policy: Side, rm: Side) -> list[str]:
    from rlhf.data.chat import has_template

    from .integrity import same_vocabulary

    out = []
    same = same_vocabulary(policy.tokenizer, rm.tokenizer)
    lost, total, ratio = (0, 1, 1.0) if same else _probe(policy.tokenizer, rm.tokenizer)
    if not same and lost and len(lost) / total > LOST_SHARE:
        out.append(f"its tokenizer ({len(rm.tokenizer)} tokens) loses {len(lost)} of the {total} pieces of the policy's "
                   f"vocabulary ({len(policy.tokenizer)} tokens) to its unknown token or in the round trip, e.g. "
                   f"{', '.join(repr(x) for x in lost[:5])}: train the reward model with a tokenizer that covers the "
                   "policy's text (e.g. from the policy's SFT model)")
    if _conversational(cfg, key, policy.tokenizer) and not has_template(rm.tokenizer):
        out.append("the prompts are conversations but the reward model has no chat template (it was trained on "
                   "plain text): train it on conversational rows, or give plain-text prompts")
    need = _response_tokens(cfg) if key.startswith("stage.reward_model") else None
    if need and rm.max_length:
        from rlhf.data.reward_encode import SequenceFrame

        budget = SequenceFrame.of(rm.tokenizer).budget(rm.max_length)
        theirs = int(need * ratio + 0.999)
        if budget < theirs:
            out.append(f"the stage samples responses of up to {need} policy tokens, about {theirs} of the reward model's "
                       f"tokens ({ratio:.2f} per policy token), but its max_length {rm.max_length} holds {budget} "
                       "(less its BOS/EOS frame): the end of longer responses would never be scored. Train the reward "
                       "model with a larger model.max_length, or sample shorter responses")
    return out


def _conversational(cfg, key: str, policy_tok) -> bool:
    from rlhf.data.chat import has_template

    node = cfg.evaluation.data if key.startswith("evaluation.") and cfg.evaluation.get("data") else cfg.data
    conv = node.get("conversational", "auto")
    if conv is True:
        return True
    return conv == "auto" and has_template(policy_tok) and node.get("format") in DIALOGUE_FORMATS


def _response_tokens(cfg) -> int | None:
    """The longest response the stage samples for training and scores with `stage.reward_model`."""
    from omegaconf import OmegaConf

    for dotted in RESPONSE_KEYS:
        v = OmegaConf.select(cfg, dotted)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _normal(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not (unicodedata.combining(c) or c.isspace()
                                           or unicodedata.category(c) in ("Cc", "Cf"))).casefold()


def _probe(policy_tok, rm_tok) -> tuple[list[str], int, float]:
    return _probe_cached(_Keyed(policy_tok), _Keyed(rm_tok))


class _Keyed:
    """A tokenizer hashed by its files' identity (name, size), so the probe runs once per pair."""

    def __init__(self, tok):
        self.tok = tok
        self.key = (getattr(tok, "name_or_path", ""), len(tok), type(tok).__name__, str(getattr(tok, "chat_template", "")))

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Keyed) and self.key == other.key


@functools.lru_cache(maxsize=16)
def _probe_cached(policy: _Keyed, rm: _Keyed) -> tuple[list[str], int, float]:
    """(lost pieces, pieces probed, reward-model tokens per policy token on the probe text)."""
    pol, tok = policy.tok, rm.tok
    special = set(pol.all_special_ids)
    ids = [i for i in range(len(pol)) if i not in special]
    ids = ids[:: max(1, len(ids) // PROBE_PIECES)]
    texts = [t for t in pol.batch_decode([[i] for i in ids]) if "\ufffd" not in t and _normal(t)]
    if not texts:
        return [], 1, 1.0
    enc = tok(texts, add_special_tokens=False, verbose=False)["input_ids"]
    back = tok.batch_decode(enc)
    unk = tok.unk_token_id if tok.unk_token is not None and tok.unk_token not in (tok.eos_token, tok.bos_token) else None
    lost = [t for t, e, b in zip(texts, enc, back, strict=True)
            if (unk is not None and unk in e) or _normal(t) != _normal(b)]
    chunks = ["".join(texts[i : i + 32]) for i in range(0, len(texts), 32)]  # text of ~32 pieces each
    n_pol = sum(map(len, pol(chunks, add_special_tokens=False, verbose=False)["input_ids"]))
    n_rm = sum(map(len, tok(chunks, add_special_tokens=False, verbose=False)["input_ids"]))
    return lost, len(texts), (n_rm / n_pol if n_pol else 1.0)
