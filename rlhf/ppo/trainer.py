"""The PPO loop: rollout -> score -> KL-shaped rewards -> GAE -> PPO epochs -> KL controller.

The arithmetic is in `core.py`, the sampling and log-prob passes in `rlhf.sampling`, the engine
plumbing in `parallel.py` (a plain or a DeepSpeed backend: one path here), the reductions over ranks
in `rlhf.distributed`; this file sequences them, logs and checkpoints. Policy and value
model have dropout switched off (as TRL and OpenRLHF do for RLHF), and every rollout and log-prob
pass runs in eval mode.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .. import distributed
from ..sampling import as_reference, evaluating, generate, token_logprobs
from . import core, parallel
from .config import PPOConfig
from .rollout import Experience, ValueModel

log = logging.getLogger(__name__)

Scorer = Callable[[list, list[str]], list[float]]  # (prompts, completions) -> one score each


class PPOTrainer:
    """Single process, or one of several (torchrun / deepspeed launcher): see `parallel`."""

    def __init__(self, config: PPOConfig, policy, value: ValueModel, tokenizer, scorer: Scorer,
                 prompts: Sequence, prompt_ids: Sequence[Sequence[int]] | None = None, reference=None,
                 output_dir: Path | None = None, log_fn: Callable[[dict, int], None] | None = None,
                 deepspeed_config: dict | None = None, stop_ids: Sequence[int] | None = None, guard=None,
                 on_iteration: Callable[[int], object] | None = None, engine=None):
        from trl.trainer.utils import disable_dropout_in_model

        self.cfg, self.policy, self.value, self.tokenizer = config, policy, value, tokenizer
        self.guard = guard  # rlhf.run.guards.StepGuard: what a non-finite loss or gradient norm does
        self.scorer, self.prompts, self.ref_model = scorer, list(prompts), reference
        self.prompt_ids = [list(x) for x in prompt_ids] if prompt_ids is not None else [
            tokenizer(p).input_ids for p in self.prompts]
        self.stop_ids = list(stop_ids) if stop_ids is not None else [tokenizer.eos_token_id]
        self.output_dir = Path(output_dir) if output_dir else None
        # the generation engine (rlhf.engines; None: HF generate); a vLLM engine takes the policy's weights
        # whenever they changed since its last rollout (after every iteration's optimizer steps)
        self.sampler = engine
        # on_iteration(i): every rank, after iteration i; returning True ends training there (rlhf.monitor)
        self.log_fn, self.on_iteration = log_fn, on_iteration
        self.stopped_at: int | None = None
        self.rank, self.world_size = distributed.world()
        for m in (policy, value):
            disable_dropout_in_model(m)
        params = [
            {"params": [p for p in policy.parameters() if p.requires_grad], "lr": config.learning_rate},
            {"params": [p for p in value.parameters() if p.requires_grad],
             "lr": config.value_learning_rate or config.learning_rate},
        ]
        self.backend = (parallel.PlainBackend(params, config) if deepspeed_config is None else
                        parallel.DeepSpeedBackend(policy, value, params, config, deepspeed_config, self.world_size))
        self.engine, self.zero3 = self.backend.engine, self.backend.zero3  # the engine: None without DeepSpeed
        if reference is not None:
            self.ref_model = self.backend.frozen(reference)
        if hasattr(scorer, "model"):
            scorer.model = self.backend.frozen(scorer.model)
        self.kl_ctl = (core.AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
                       if config.kl_control == "adaptive" else core.FixedKLController(config.kl_coef))
        self.iteration = 0
        self.history: list[dict] = []
        self._rng = random.Random(config.seed + 1009 * self.rank)  # each rank its own prompt order
        self._order: list[int] = []

    # ---- data -------------------------------------------------------------------------------
    def _next_prompts(self) -> list[int]:
        out = []
        while len(out) < self.cfg.rollout_batch_size:
            if not self._order:
                self._order = list(range(len(self.prompts)))
                self._rng.shuffle(self._order)
            out.append(self._order.pop())
        return out

    # ---- one iteration ------------------------------------------------------------------------
    @torch.no_grad()
    def make_experience(self) -> Experience:
        c = self.cfg
        picked = self._next_prompts()
        t0 = time.perf_counter()
        batch = (self.sampler.generate if self.sampler is not None else generate)(
            self.policy, [self.prompt_ids[i] for i in picked], pad_id=self.tokenizer.pad_token_id,
            stop_ids=self.stop_ids, max_new_tokens=c.max_new_tokens, temperature=c.temperature,
            top_k=c.top_k, top_p=c.top_p, seed=c.seed * 1_000_003 + self.iteration * 7_919 + self.rank,
            synced=self.zero3 and self.world_size > 1)
        rollout_s = time.perf_counter() - t0
        engine_stats = self.sampler.stats() if hasattr(self.sampler, "stats") else {}  # vLLM: weight syncs
        prompts = [self.prompts[i] for i in picked]
        completions = self.tokenizer.batch_decode(batch.responses, skip_special_tokens=True)
        mask = batch.response_mask.float()
        with evaluating(self.policy, self.value):
            old_logp, entropy = token_logprobs(self.policy, batch, c.temperature)
            with as_reference(self.policy, self.ref_model) as ref:
                ref_logp, _ = token_logprobs(ref, batch, c.temperature)
            values = self.value(batch)
        scores = torch.tensor(self.scorer(prompts, completions), dtype=torch.float32)
        raw_scores = scores.clone()
        if c.missing_eos_penalty is not None:
            scores = scores - c.missing_eos_penalty * (~batch.ended.cpu()).float()
        if c.score_clip is not None:
            scores = scores.clamp(-c.score_clip, c.score_clip)
        kl = core.kl_per_token(old_logp, ref_logp, c.kl_estimator) * mask
        rewards = core.shaped_rewards(scores.to(kl.device), kl, mask, self.kl_ctl.value)
        if c.whiten_rewards:
            rewards = core.masked_whiten(rewards, mask, shift_mean=False)
        adv, returns = core.gae(rewards, values, mask, c.gamma, c.lam)
        if c.whiten_advantages:
            adv = core.masked_whiten(adv, mask)
        kl_seq = (core.kl_per_token(old_logp, ref_logp, "k1") * mask).sum(1)  # reported: log-ratio summed
        stats = {
            "objective/kl": kl_seq.mean().item(),
            "objective/scores": raw_scores.mean().item(),
            "objective/rlhf_reward": (scores.to(kl_seq.device) - self.kl_ctl.value * kl_seq).mean().item(),
            "objective/entropy": core.masked_mean(entropy, mask).item(),
            "objective/entropy_seq": (entropy * mask).sum(1).mean().item(),
            "val/explained_variance": core.explained_variance(values, returns, mask),
            "val/mean": core.masked_mean(values, mask).item(),
            "response_length": mask.sum(1).mean().item(),
            "ended_with_eos": batch.ended.float().mean().item(),
            "kl_coef": self.kl_ctl.value,
            "tokens_per_s/rollout": mask.sum().item() / max(rollout_s, 1e-9),
            **engine_stats,
        }
        is_weights = None
        if batch.sampler_logprobs is not None and c.importance_sampling_level != "none":
            # the ratio uses the trainer's own log-probs (old_logp); the engine's differ a little (kernels,
            # dtype): truncated importance sampling corrects for the behaviour policy
            is_weights, is_stats = core.truncated_is_weights(old_logp, batch.sampler_logprobs.to(old_logp.device),
                                                            mask, c.importance_sampling_level,
                                                            c.importance_sampling_cap)
            stats.update({f"rollout/{k}": v for k, v in is_stats.items()})
        if not bool(mask.any()):  # no response token at all: per-token means are undefined, not 0
            stats["objective/entropy"] = stats["val/mean"] = float("nan")
        return Experience(batch, prompts, completions, mask, old_logp, values, adv, returns, stats, is_weights)

    def optimise(self, exp: Experience) -> dict:
        """`ppo_epochs` passes over the experience in minibatches: clipped policy + value losses."""
        c = self.cfg
        micro = c.mini_batch_size // c.gradient_accumulation_steps
        agg: dict[str, list[float]] = {}
        t0, n_tokens = time.perf_counter(), 0
        gen = torch.Generator().manual_seed(c.seed * 7919 + self.iteration)
        self.policy.train()
        self.value.train()
        n_steps = c.ppo_epochs * -(-len(exp) // c.mini_batch_size)
        try:
            for _ in range(c.ppo_epochs):
                perm = torch.randperm(len(exp), generator=gen)
                for m0 in range(0, len(exp), c.mini_batch_size):
                    mini = perm[m0 : m0 + c.mini_batch_size]
                    self.backend.zero_grad()
                    loss = 0.0
                    for u0 in range(0, len(mini), micro):
                        sub = exp.select(mini[u0 : u0 + micro].to(exp.mask.device))
                        n_tokens += int(sub.mask.sum())
                        loss += self._micro_step(sub, agg) / c.gradient_accumulation_steps
                    k = len(agg.get("grad_norm", [])) + 1
                    step = f"iteration {self.iteration + 1}, optimizer step {k} of {n_steps}"
                    values = {"loss": loss, "objective/scores": exp.stats["objective/scores"]}
                    agg.setdefault("grad_norm", []).append(self.backend.step(self.guard, step, values))
        finally:
            self.policy.eval()
            self.value.eval()
        stats = {k: sum(v) / len(v) for k, v in agg.items()}
        stats["tokens_per_s/train"] = n_tokens / max(time.perf_counter() - t0, 1e-9)
        return stats

    def _micro_step(self, sub: Experience, agg: dict[str, list[float]]) -> float:
        """Forward and backward of one micro-batch; returns its loss (policy + vf_coef * value)."""
        c = self.cfg
        with torch.enable_grad():
            logp, entropy = token_logprobs(self.policy, sub.batch, c.temperature)
            pg, pg_stats = core.policy_loss(logp, sub.old_logprobs, sub.advantages, sub.mask, c.clip_range,
                                            sub.is_weights)
            vf, vf_stats = core.value_loss(self.value(sub.batch), sub.values, sub.returns, sub.mask, c.value_clip_range)
            self.backend.backward(pg + c.vf_coef * vf)
        for k, val in (("loss/policy", pg.item()), ("loss/value", vf.item()),
                       ("policy/approxkl", pg_stats["approxkl"].item()), ("policy/clipfrac", pg_stats["clipfrac"].item()),
                       ("policy/ratio", pg_stats["ratio"].item()), ("val/clipfrac", vf_stats["clipfrac"].item()),
                       ("policy/entropy", core.masked_mean(entropy.detach(), sub.mask).item())):
            agg.setdefault(k, []).append(val)
        return float((pg + c.vf_coef * vf).detach())

    def train(self, progress: bool = True) -> list[dict]:
        """Iterate to `total_iterations`; a SIGTERM / SIGUSR1 / Ctrl-C checkpoints the iteration it ends
        and raises `rlhf.run.preemption.Interrupted` (rlhf.run.preemption)."""
        from ..run import preemption

        with preemption.handling():  # SIGTERM / SIGUSR1 / Ctrl-C: checkpoint after this iteration, then stop
            return self._train(progress)

    def _train(self, progress: bool) -> list[dict]:
        from tqdm.auto import tqdm

        from ..run import preemption

        c = self.cfg
        bar = tqdm(total=c.total_iterations, initial=self.iteration, desc="PPO", disable=not progress or self.rank != 0)
        while self.iteration < c.total_iterations:
            t0 = time.perf_counter()
            exp = self.make_experience()
            stats = distributed.mean_over_ranks({**exp.stats, **self.optimise(exp)})
            stats["time/iteration_s"] = time.perf_counter() - t0  # rollout + optimisation, before any evaluation
            # Ziegler et al.'s horizon counts the samples the whole job has seen, not this rank's.
            self.kl_ctl.update(stats["objective/kl"], c.rollout_batch_size * self.world_size)
            self.iteration += 1
            stats["iteration"] = self.iteration
            self.history.append(stats)
            if self.log_fn and self.rank == 0 and self.iteration % c.logging_every == 0:
                self.log_fn(stats, self.iteration)
            # every rank evaluates at the same iteration (in lock-step under ZeRO-3); all stop if one does
            if self.on_iteration is not None and distributed.any_rank(self.on_iteration(self.iteration) is True):
                self.stopped_at = self.iteration
            bar.set_postfix(score=f"{stats['objective/scores']:.3f}", kl=f"{stats['objective/kl']:.2f}",
                            beta=f"{stats['kl_coef']:.3f}")
            bar.update(1)
            if self.stopped_at is not None:
                break
            saved = None
            if c.save_every and self.output_dir and self.iteration % c.save_every == 0 \
                    and self.iteration < c.total_iterations:
                saved = self.save_checkpoint()
            if (sig := preemption.agreed()) is not None and self.iteration < c.total_iterations:
                if saved is None and self.output_dir:
                    saved = self.save_checkpoint()
                bar.close()
                raise preemption.Interrupted(sig, str(saved) if saved is not None else None)
        bar.close()
        return self.history

    # ---- checkpoints --------------------------------------------------------------------------
    def _state_name(self) -> str:
        return "trainer_state.json" if self.rank == 0 else f"trainer_state-{self.rank}.json"

    def save_checkpoint(self) -> Path:
        """checkpoints/iter-N/: policy + value weights and optimizer (a DeepSpeed checkpoint under
        DeepSpeed), KL controller, each rank's data order, history. Collective on several ranks."""
        root = self.output_dir / "checkpoints"
        tmp, final = root / f".iter-{self.iteration}.tmp", root / f"iter-{self.iteration}"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        distributed.barrier()
        self.backend.save(tmp, self.policy, self.value, self.rank)
        meta = {"iteration": self.iteration, "kl_ctl": self.kl_ctl.state_dict(), "order": self._order,
                "rng": self._rng.getstate()[1], "history": self.history}
        if self.rank != 0:
            (tmp / self._state_name()).write_text(json.dumps(meta, default=float))
        distributed.barrier()
        if self.rank == 0:
            (tmp / self._state_name()).write_text(json.dumps(meta, default=float))  # last: marks it complete
            tmp.rename(final)  # complete or absent, never half-written
            for old in root.glob("iter-*"):
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
        distributed.barrier()
        return final

    def load_checkpoint(self, path: Path) -> None:
        self.backend.load(path, self.policy, self.value)
        meta = json.loads((path / self._state_name()).read_text())
        self.iteration = int(meta["iteration"])
        self.kl_ctl.load_state_dict(meta["kl_ctl"])
        self._order = list(meta["order"])
        self._rng.setstate((3, tuple(meta["rng"]), None))
        self.history = list(meta["history"])


def last_checkpoint(output_dir: Path) -> Path | None:
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return None
    from ..run.resume import damaged_file, set_aside

    done = sorted((p for p in root.glob("iter-*") if (p / "trainer_state.json").is_file()),
                  key=lambda p: int(p.name.split("-")[1]), reverse=True)
    for path in done:  # the newest intact one; a damaged one is named and set aside (rlhf.run.resume)
        if (why := damaged_file(path)) is None:
            return path
        set_aside(path, why)
    if done:
        log.warning("no intact checkpoint left in %s: starting over from iteration 0", root)
    return None


def kl_trace_summary(history: list[dict], target: float | None) -> dict:
    """How well the KL held over the last half of training (for the adaptive controller)."""
    half = history[len(history) // 2 :]
    kls = [h["objective/kl"] for h in half]
    out = {"kl_last_half_mean": sum(kls) / len(kls), "kl_last_half_min": min(kls), "kl_last_half_max": max(kls),
           "kl_coef_final": history[-1]["kl_coef"]}
    if target:
        out["kl_last_half_within_30pct"] = sum(abs(k / target - 1) <= 0.3 for k in kls) / len(kls)
        out["kl_target"] = target
    out["kl_last_half_std"] = math.sqrt(sum((k - out["kl_last_half_mean"]) ** 2 for k in kls) / len(kls))
    return out
