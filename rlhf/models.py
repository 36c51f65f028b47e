"""The one place models and tokenizers are loaded: from a hub id, a local folder, or an artifact.

Every model a run holds (the trained policy, its frozen reference, a reward model, a value model,
an evaluated policy) goes through `_from_pretrained`, so `model.dtype`, `model.revision`,
`model.attn_implementation` and `model.trust_remote_code` apply to all of them alike. Tokenizers
get a pad token that is not EOS, BOS on encode if asked, and the chat template the config names.
Everything here takes narrow config nodes (`cfg.model`, `cfg.peft`), never the root config.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UserError, did_you_mean
from .run.artifacts import Artifact, read_artifact

log = logging.getLogger(__name__)

# Chat templates shipped in rlhf/templates (written from each format's public description): the file,
# the markers the format needs as single tokens (added to a tokenizer that lacks them, growing its
# vocabulary), and the marker that ends an assistant turn (None: the format ends turns with EOS).
CHAT_TEMPLATES = {
    "chatml": ("chatml.jinja", ("<|im_start|>", "<|im_end|>"), "<|im_end|>"),
    "llama3": ("llama3.jinja", ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), "<|eot_id|>"),
    "zephyr": ("zephyr.jinja", ("<|system|>", "<|user|>", "<|assistant|>"), None),
}
# Markers that end an assistant turn in common templates: generation stops at them as at EOS.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


def resolve_source(model_cfg, expect_kinds: tuple[str, ...]) -> tuple[str, Artifact | None]:
    """Where to load weights from: `init_from` (an artifact of an allowed kind) or `name_or_path`."""
    if model_cfg.init_from:
        art = read_artifact(model_cfg.init_from, expect_kinds=expect_kinds)
        from .run.integrity import check_same_model

        check_same_model(model_cfg, art)  # model= and the artifact's weights are one model
        return str(art.path(art.model_dir)), art
    return str(model_cfg.name_or_path), None


# ---- tokenizers ---------------------------------------------------------------------------------
def load_tokenizer(model_cfg, source: str | None = None):
    """The model's tokenizer with a pad token that is not EOS, BOS on encode if asked, and the chat
    template `model.chat_template` names (else its own).

    Pad is never EOS: a collator masks padding out of the labels (the policy is never taught to stop)
    and a reward head reads the last non-pad token (the EOS its sequence is framed with would be
    invisible: GPT-2-style tokenizers have unk = bos = eos and no pad). When there is no pad token, or
    it is EOS, we use <unk> if that is not EOS (stories260k: id 0), else add a dedicated <pad> (the
    model's embeddings grow by one row when it is built); the choice is logged and saved with the
    tokenizer. `model.pad_token` naming EOS is refused.
    """
    from transformers import AutoTokenizer

    path = model_cfg.tokenizer or source or model_cfg.name_or_path
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code,
                                            revision=_revision(model_cfg, path))
    except (OSError, ValueError) as e:
        raise UserError(f"model: cannot load a tokenizer from {path!r}: {e}") from None
    set_pad_token(tok, model_cfg.pad_token, path)
    if model_cfg.add_bos and tok.bos_token_id is not None:
        ids = tok("a").input_ids
        if not ids or ids[0] != tok.bos_token_id:
            tok.add_bos_token = True  # updates the fast tokenizer's post-processor
            if tok("a").input_ids[0] != tok.bos_token_id:
                raise UserError(f"model.add_bos: could not make the tokenizer of {path!r} prepend BOS")
    if model_cfg.get("chat_template"):
        set_chat_template(tok, str(model_cfg.chat_template), bool(model_cfg.add_bos))
    return tok


def set_pad_token(tok, wanted: str | None, path: str) -> None:
    """A pad token that is not EOS (see `load_tokenizer`); refuses `model.pad_token` set to EOS."""
    eos = tok.eos_token_id
    if wanted:
        tok.pad_token = wanted
        if eos is not None and tok.pad_token_id == eos:
            raise UserError(f"model.pad_token: {wanted!r} is the EOS token of {path!r}: padding with EOS hides the EOS "
                            "from the SFT loss and from a reward head; set model.pad_token=null (a dedicated pad "
                            "token is added) or name another special token")
        return
    own = tok.pad_token
    if own is not None and (eos is None or tok.pad_token_id != eos):
        return
    if tok.unk_token is not None and tok.unk_token_id != eos:
        tok.pad_token = tok.unk_token
    else:
        tok.add_special_tokens({"pad_token": "<pad>"})
    if own is not None or tok.pad_token == "<pad>":
        log.info("tokenizer of %s: pad token %s (id %s)%s", path, tok.pad_token, tok.pad_token_id,
                 f", not its own pad {own!r}, which is EOS" if own is not None else
                 " added: it had no pad and its unk is EOS or missing")


def chat_template_text(spec: str) -> tuple[str, tuple[str, ...]]:
    """(template text, markers it needs as tokens) of a shipped name or a .jinja file path."""
    if spec in CHAT_TEMPLATES:
        file, markers, _ = CHAT_TEMPLATES[spec]
        return resources.files("rlhf.templates").joinpath(file).read_text(encoding="utf-8"), markers
    path = Path(spec).expanduser()
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8"), ()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"model.chat_template: cannot read {path}: {e}") from None
    raise UserError(f"model.chat_template: {spec!r} is neither a shipped template "
                    f"({', '.join(CHAT_TEMPLATES)}){did_you_mean(spec, CHAT_TEMPLATES)} nor a .jinja file")


def set_chat_template(tok, spec: str, add_bos: bool) -> None:
    """Give `tok` a chat template; missing markers become special tokens (the vocabulary grows and the
    model's embeddings are resized to match when it is built), and a shipped format's end-of-turn
    marker becomes EOS, so every generator (ours, TRL's, `pipeline`) stops at the end of the
    assistant's turn (as TRL's `clone_chat_template` does). With `add_bos` and a template that writes
    no BOS, BOS is prepended to the template, so a conversation starts with exactly one."""
    text, markers = chat_template_text(spec)
    vocab = tok.get_vocab()
    missing = [m for m in markers if m not in vocab]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        log.info("chat template %s: added %s to the vocabulary (now %d tokens)", spec, missing, len(tok))
    end_of_turn = CHAT_TEMPLATES[spec][2] if spec in CHAT_TEMPLATES else None
    if end_of_turn and tok.eos_token != end_of_turn:
        log.info("chat template %s: EOS is now %s (was %s)", spec, end_of_turn, tok.eos_token)
        tok.eos_token = end_of_turn
    if add_bos and tok.bos_token and "bos_token" not in text and tok.bos_token not in text:
        text = "{{- bos_token -}}\n" + text
    tok.chat_template = text


def stop_token_ids(tok) -> list[int]:
    """EOS and, for a chat template, the token that ends an assistant turn: where sampling stops."""
    ids = [tok.eos_token_id] if tok.eos_token_id is not None else []
    template = getattr(tok, "chat_template", None) or ""
    vocab = tok.get_vocab() if template else {}
    ids += [vocab[m] for m in END_OF_TURN if m in template and m in vocab and vocab[m] not in ids]
    return ids


# ---- models ---------------------------------------------------------------------------------------
def _revision(model_cfg, source: str) -> str | None:
    """`model.revision` names a revision of the hub model, not of a local artifact folder."""
    return model_cfg.revision if str(source) == str(model_cfg.name_or_path) else None


def _dtype(name: str):
    import torch

    if name in (None, "auto"):
        return "auto"
    try:
        return getattr(torch, name)
    except AttributeError:
        raise UserError(f"model.dtype: unknown dtype {name!r} (float32, bfloat16, float16 or auto)") from None


def _load_kwargs(model_cfg, source: str, peft_cfg=None) -> dict[str, Any]:
    kw: dict[str, Any] = dict(dtype=_dtype(model_cfg.dtype), trust_remote_code=model_cfg.trust_remote_code,
                              revision=_revision(model_cfg, source))
    if model_cfg.attn_implementation:
        kw["attn_implementation"] = model_cfg.attn_implementation
    if peft_cfg is not None and peft_cfg.method == "qlora":
        from transformers import BitsAndBytesConfig

        from .quantization import compute_dtype

        q = dict(peft_cfg.quantization)
        q["bnb_4bit_compute_dtype"] = compute_dtype(q.get("bnb_4bit_compute_dtype"), model_cfg.dtype)
        kw["quantization_config"] = BitsAndBytesConfig(**q)
    return kw


def _from_pretrained(cls, source: str, model_cfg, peft_cfg=None, **extra):
    try:
        return cls.from_pretrained(source, **_load_kwargs(model_cfg, source, peft_cfg), **extra)
    except OSError as e:
        raise UserError(f"model: cannot load {source!r}: {e}") from None


def build_policy(model_cfg, peft_cfg, tokenizer=None, expect_kinds=("policy",)):
    """A causal LM ready to train: loaded, pad-aware, lower layers frozen, PEFT applied."""
    from transformers import AutoModelForCausalLM

    source, _ = resolve_source(model_cfg, expect_kinds)
    model = _from_pretrained(AutoModelForCausalLM, source, model_cfg, peft_cfg)
    return _finish(model, model_cfg, peft_cfg, tokenizer, task_type="CAUSAL_LM")


def build_reward_model(model_cfg, peft_cfg, tokenizer=None):
    """A scalar-head sequence classifier (num_labels=1) from a base LM, a policy or a reward artifact."""
    from transformers import AutoModelForSequenceClassification

    source, _ = resolve_source(model_cfg, ("policy", "reward"))
    model = _from_pretrained(AutoModelForSequenceClassification, source, model_cfg, peft_cfg, num_labels=1)
    return _finish(model, model_cfg, peft_cfg, tokenizer, task_type="SEQ_CLS")


def build_value_model(model_cfg, source: str, tokenizer):
    """PPO's critic: a sequence classifier (num_labels=1) from `source` (a reward model's or the
    policy's weights) whose head `rlhf.ppo.ValueModel` applies to every position; trained, whole."""
    from transformers import AutoModelForSequenceClassification

    model = _from_pretrained(AutoModelForSequenceClassification, source, model_cfg, None, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def load_frozen_policy(model_cfg, source: str, tokenizer, whole: bool = True):
    """A causal LM for inference only (a reference, an evaluated policy), in eval mode, no gradients:
    whole even while a ZeRO-3 config is live, or (`whole=False`) partitioned as it is built, for a
    reference a DeepSpeed engine will hold (DPO under ZeRO-3)."""
    import contextlib

    from transformers import AutoModelForCausalLM

    from .distributed import zero3_init_off

    with zero3_init_off() if whole else contextlib.nullcontext():
        model = _from_pretrained(AutoModelForCausalLM, source, model_cfg)
    model = _finish(model, model_cfg, None, tokenizer, task_type="CAUSAL_LM")
    model.requires_grad_(False)
    return model.eval()


def load_reward_artifact(run_dir: str, model_cfg, what: str = "stage.reward_model"):
    """(model, tokenizer, max_length) of a reward-model artifact, for scoring: whole on every rank,
    in eval mode, in the run's dtype; its own tokenizer (template, truncation) and training length."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .distributed import zero3_init_off

    art = read_artifact(run_dir, expect_kinds=("reward",), what=what)
    path = str(art.path(art.model_dir))
    with zero3_init_off():
        model = _from_pretrained(AutoModelForSequenceClassification, path, model_cfg)
    try:
        tok = AutoTokenizer.from_pretrained(str(art.path(art.tokenizer_dir)))
    except (OSError, ValueError) as e:
        raise UserError(f"{what}: cannot load the tokenizer of {art.run_dir}: {e}") from None
    model.requires_grad_(False)
    limits = [art.extra.get("max_length"), getattr(model.config, "max_position_embeddings", None),
              tok.model_max_length]
    return model.eval(), tok, min(x for x in limits if isinstance(x, int) and x > 0)


def artifact_tokenizer(art, what: str):
    """The tokenizer saved with an artifact, exactly as saved (to compare vocabularies, not to encode)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(art.path(art.tokenizer_dir)))
    except (OSError, ValueError) as e:
        raise UserError(f"{what}: cannot load the tokenizer of {art.run_dir}: {e}") from None


def load_config(model_cfg, source: str):
    """The model's transformers config (no weights): for the memory estimate."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=model_cfg.trust_remote_code,
                                          revision=_revision(model_cfg, source))
    except (OSError, ValueError) as e:
        raise UserError(f"model: cannot read the config of {source!r}: {e}") from None


def grown_vocabulary(model_cfg, source: str, tokenizer) -> int:
    """How many tokens the tokenizer has beyond the model's embeddings (a chat template's markers)."""
    return max(0, len(tokenizer) - int(getattr(load_config(model_cfg, source), "vocab_size", len(tokenizer))))


def _finish(model, model_cfg, peft_cfg, tokenizer, task_type: str):
    if tokenizer is not None:
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
            stops = stop_token_ids(tokenizer)
            if stops:  # saved with the model: any HF tool's generate() stops at the end of a turn
                model.generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops
    if model_cfg.freeze_layers:
        freeze_lower_layers(model, int(model_cfg.freeze_layers))
    if peft_cfg is not None and peft_cfg.method in ("lora", "qlora"):
        model = apply_lora(model, peft_cfg, task_type)
    return model


def transformer_blocks(model):
    """The ModuleList of transformer blocks, whatever the architecture calls it."""
    import torch.nn as nn

    best = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and "lora" not in name:
            if best is None or len(module) > len(best[1]):
                best = (name, module)
    if best is None:
        raise UserError(f"model.freeze_layers: cannot find the transformer blocks of {type(model).__name__}")
    return best[1]


def freeze_lower_layers(model, n: int) -> None:
    """Freeze the input embeddings and the lowest `n` blocks; everything above trains."""
    blocks = transformer_blocks(model)
    if not 0 <= n <= len(blocks):
        raise UserError(f"model.freeze_layers: {n} is outside 0..{len(blocks)} (the model has {len(blocks)} blocks)")
    if n == 0:
        return
    emb = model.get_input_embeddings()
    tied = getattr(model.config, "tie_word_embeddings", False)
    if not tied:  # a tied embedding is also the output head: keep it trainable
        emb.weight.requires_grad_(False)
    for block in list(blocks)[:n]:
        for p in block.parameters():
            p.requires_grad_(False)
    log.info("froze %s and the lowest %d of %d blocks", "nothing else" if tied else "embeddings", n, len(blocks))


def apply_lora(model, peft_cfg, task_type: str):
    from peft import get_peft_model, prepare_model_for_kbit_training

    from .trust import build_peft_config

    lora_cfg = build_peft_config(peft_cfg, task_type)  # peft.* classes only, no nested _target_ (README: Trust)
    if peft_cfg.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, lora_cfg)
    return model


def count_parameters(model) -> dict[str, int]:
    def numel(p):  # a ZeRO-3 shard's own numel() is its share; ds_numel is the whole tensor
        return getattr(p, "ds_numel", p.numel())

    total = sum(numel(p) for p in model.parameters())
    trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
    return {"params_total": total, "params_trainable": trainable}
def merged_full_precision(model, adapter_dir: Path, tokenizer):
    """What a QLoRA run publishes as its model: the adapter saved in `adapter_dir` merged into the base
    loaded in full precision (peft's documented way: a 4-bit base cannot take the update without
    rounding it back to NF4), in the 4-bit layers' compute dtype, with the trained model's vocabulary,
    labels, pad token and generation config. `model`: the PeftModel over the 4-bit base."""
    import copy

    from peft import PeftModel
    from transformers import AutoConfig

    from .quantization import layer_dtype

    base = model.get_base_model()
    source = model.peft_config[model.active_adapter].base_model_name_or_path
    config = AutoConfig.from_pretrained(source)
    for key in ("num_labels", "id2label", "label2id", "pad_token_id"):
        setattr(config, key, copy.deepcopy(getattr(base.config, key)))
    full = type(base).from_pretrained(source, config=config, dtype=layer_dtype(model))
    if len(tokenizer) > full.get_input_embeddings().num_embeddings:
        full.resize_token_embeddings(len(tokenizer))
    full = PeftModel.from_pretrained(full, str(adapter_dir)).merge_and_unload()
    if getattr(base, "generation_config", None) is not None:
        full.generation_config = copy.deepcopy(base.generation_config)
    return full
