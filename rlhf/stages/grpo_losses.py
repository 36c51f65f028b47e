"""TRL 1.16's GRPO loss variants (`trainer.loss_type`) and importance-sampling levels
(`trainer.importance_sampling_level`), checked when the config is validated: TRL takes any string
and raises only when the first loss is computed, after the model is loaded and samples are drawn.

All variants share GRPO's group-relative advantage A_i = (r_i - mean_group r) / std_group r (Shao
et al., 2024, DeepSeekMath, section 4.1; `scale_rewards` picks the std) and the importance weight
w = pi_theta / pi_old per token, or at `importance_sampling_level=sequence` its geometric mean over
the completion's tokens (GSPO: Zheng et al., 2025). They differ in how w meets A and how the
token losses are averaged (TRL's `GRPOTrainer._compute_loss`):

  dapo     min(w A, clip(w, 1-e_low, 1+e_high) A), summed over the generation batch's tokens and divided
           by their count (TRL's default; DAPO: Yu et al., 2025: no length bias)
  grpo     the same clipped term, a mean over each completion's tokens, then over completions
           (the DeepSeekMath paper's form; prefers short right answers and long wrong ones)
  dr_grpo  the same term, summed and divided by batch x max_completion_length (Dr. GRPO: Liu et al., 2025)
  bnpo     the same term, divided by the local batch's token count
  cispo    -clip(w, max=e_high).detach() x A x log pi_theta (MiniMax-M1, 2025): clips the weight, not the update
  sapo     a sigmoid gate on w - 1 instead of hard clipping (Soft Adaptive Policy Optimization, 2025)
  luspo    GSPO's sequence loss scaled by each completion's length (LUSPO, 2026); meant with
           importance_sampling_level=sequence (TRL warns otherwise)
  vespo    an asymmetric Gamma weighting of sequence-level weights (VESPO, 2026); computes the sequence
           weights itself, so importance_sampling_level stays token (TRL warns otherwise)

TRL logs the variant's own clipping statistics: clip_ratio/* (dapo, grpo, dr_grpo, bnpo, luspo),
cispo_clip_ratio (cispo), vespo/phi_seq_mean (vespo).
"""

from __future__ import annotations

from ..errors import did_you_mean

LOSS_TYPES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo")  # TRL 1.16 GRPOConfig.loss_type
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")  # TRL 1.16 GRPOConfig.importance_sampling_level


def problems(trainer: dict) -> list[str]:
    """The `trainer:` node of stage=grpo: loss_type and importance_sampling_level are values TRL 1.16
    knows (each unknown one named with a did-you-mean and the accepted values)."""
    out = []
    for key, accepted in (("loss_type", LOSS_TYPES), ("importance_sampling_level", IMPORTANCE_SAMPLING_LEVELS)):
        value = trainer.get(key)
        if value is not None and value not in accepted:
            out.append(f"trainer.{key}: {value!r} is not one of TRL's GRPO values{did_you_mean(str(value), accepted)}; "
                       f"one of {', '.join(accepted)}")
    return out
