"""Publishing a trained model into its run directory as an ordinary Hugging Face checkpoint: one
process or ZeRO-3 shards gathered, a PEFT adapter beside its merged model (a 4-bit base merged in full
precision by `rlhf.models.merged_full_precision`)."""

from __future__ import annotations

from pathlib import Path


def save_model(model, tokenizer, run_dir: Path, engine=None, subdir: str = "model",
               embeddings: bool | str = "auto") -> tuple[str, str | None]:
    """Save in Hugging Face format (safetensors). A PEFT model saves its active adapter (not the
    "ref" copy TRL may add) and a merged copy; `embeddings`: peft's `save_embedding_layers` (True when
    the vocabulary grew, so base + adapter loads after a resize).

    Every rank calls it; rank 0 writes. Under ZeRO-3 the shards are first gathered into one full
    state dict on rank 0 (`rlhf.distributed.gathered_state_dict`), so the result is the same
    ordinary checkpoint one process writes. `engine`: the DeepSpeed engine that trained the model
    (its parameter prefetches are settled first); `subdir`: where in run_dir the model goes (PPO's
    value model: "value"). Returns (model_dir, adapter_dir) relative to run_dir.
    """
    from ..distributed import gathered_state_dict, is_main, is_partitioned
    from ..models import merged_full_precision
    from ..quantization import is_4bit

    run_dir = Path(run_dir)
    peft = hasattr(model, "peft_config")
    adapter_dir = "adapter" if peft else None
    four_bit = peft and is_4bit(model)
    if is_partitioned(model):
        if engine is not None:
            engine.empty_partition_cache()  # no parameter left in flight from the last forward pass
        state = gathered_state_dict(model)  # collective: every rank gathers, rank 0 keeps
        if is_main():
            _save_from_state_dict(model, state, tokenizer, run_dir, subdir, embeddings)
        return subdir, adapter_dir
    if not is_main():
        return subdir, adapter_dir
    if peft:
        model.save_pretrained(run_dir / "adapter", safe_serialization=True, selected_adapters=[model.active_adapter],
                              save_embedding_layers=embeddings)
        tokenizer.save_pretrained(run_dir / "adapter")
        # a 4-bit base: the adapter merged into the base loaded in full precision (merged_full_precision)
        model = merged_full_precision(model, run_dir / "adapter", tokenizer) if four_bit else model.merge_and_unload()
    model.save_pretrained(run_dir / subdir, safe_serialization=True)
    tokenizer.save_pretrained(run_dir / subdir)
    return subdir, adapter_dir


def _save_from_state_dict(model, state: dict, tokenizer, run_dir: Path, subdir: str = "model",
                          embeddings: bool | str = "auto") -> None:
    """Rank 0, ZeRO-3: write a gathered state dict through an unpartitioned copy of the model, built
    on the meta device (no memory, no init) and given the gathered tensors; LoRA is merged there."""
    import copy

    import torch

    from ..distributed import zero3_init_off

    peft = hasattr(model, "peft_config")
    base = model.get_base_model() if peft else model
    with zero3_init_off(), torch.device("meta"):
        clone = type(base)(copy.deepcopy(base.config))
        if peft:  # every adapter (TRL may add its own, e.g. a "ref" copy), the same one active
            from peft import get_peft_model

            names = list(model.peft_config)
            clone = get_peft_model(clone, copy.deepcopy(model.peft_config[names[0]]), adapter_name=names[0])
            for name in names[1:]:
                clone.add_adapter(name, copy.deepcopy(model.peft_config[name]))
            clone.set_adapter(model.active_adapter)
    clone.load_state_dict(state, assign=True)
    if getattr(base, "generation_config", None) is not None and getattr(clone, "generation_config", None) is not None:
        clone.generation_config = copy.deepcopy(base.generation_config)
    if peft:
        clone.save_pretrained(run_dir / "adapter", safe_serialization=True, selected_adapters=[model.active_adapter],
                              save_embedding_layers=embeddings)
        tokenizer.save_pretrained(run_dir / "adapter")
        clone = clone.merge_and_unload()
    clone.save_pretrained(run_dir / subdir, safe_serialization=True)
    tokenizer.save_pretrained(run_dir / subdir)
