"""A reward model's score inside the framework vs outside it, on real HH-RLHF (prompt, response) pairs.

    RLHF_ASSETS_DIR=/work/shared/assets python bench/reward_portable.py [RUN_DIR ...] [--pairs N]

Without RUN_DIR it trains two smoke reward models first (stories260k at max_length 64: BOS/EOS and
left truncation; all-MiniLM-L6-v2 at 256: [CLS]/[SEP]) under /tmp. For each pair it prints:

- inside: `rlhf.reward.RewardScorer` (what PPO, GRPO/RLOO and the evaluation use);
- one line: the saved folder with plain transformers,
  ``model(**tokenizer(prompt, response, truncation="only_first", return_tensors="pt"))``;
- TRL GRPO: how TRL's GRPOTrainer scores a reward model passed by path: prompt + completion as one
  text, ``add_special_tokens=False`` (no BOS/EOS, no truncation past the model's positions: cut here
  to the last model_max_length tokens so it does not crash).

Only pairs whose response fits the window are scored (a longer response is refused by the one line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402


def hh_pairs(assets: Path, n: int) -> list[tuple[str, str]]:
    out = []
    for line in (assets / "data/hh-rlhf/harmless-base.jsonl").read_text().splitlines():
        text = json.loads(line)["chosen"]
        cut = text.rfind("\n\nAssistant:") + len("\n\nAssistant:")
        if len(text) - cut < 120:
            out.append((text[:cut], text[cut:]))
        if len(out) == n:
            break
    return out


def train(root: Path) -> list[Path]:
    from hydra import compose, initialize_config_module

    from rlhf.cli import register_resolvers
    from rlhf.runner import run_stage

    register_resolvers()
    quiet = ["stage=reward", "logger=none", "debug=smoke", "trainer.eval_strategy=no", "trainer.save_strategy=no"]
    with initialize_config_module(config_module="rlhf.conf", version_base="1.3"):
        for name, extra in (("llama", ["model.max_length=64"]), ("minilm", ["model=minilm"])):
            run_stage(compose("config", overrides=[*quiet, *extra, f"experiment_name={name}"]), root / name)
    return [root / "llama", root / "minilm"]


def inside_scores(run_dir: Path, pairs) -> list[float]:
    from rlhf.models import load_reward_artifact
    from rlhf.reward import RewardScorer
    from rlhf.schema import Model

    model, tok, max_length = load_reward_artifact(str(run_dir), Model(name_or_path="unused"))
    return RewardScorer(model, tok, max_length, batch_size=1)([p for p, _ in pairs], [r for _, r in pairs])


@torch.no_grad()
def outside_scores(model_dir: Path, pairs) -> tuple[list[float], list[float]]:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    one_line = [model(**tok(p, r, truncation="only_first", return_tensors="pt")).logits[0, 0].item() for p, r in pairs]
    trl = []
    for p, r in pairs:
        ids = tok(p + r, add_special_tokens=False, return_tensors="pt").input_ids[:, -tok.model_max_length:]
        trl.append(model(input_ids=ids).logits[0, 0].item())
    return one_line, trl


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--pairs", type=int, default=8)
    a = ap.parse_args(argv)
    assets = Path(os.environ.get("RLHF_ASSETS_DIR", Path(__file__).resolve().parents[2] / "shared" / "assets"))
    torch.set_num_threads(2)
    runs = a.runs or train(Path(tempfile.mkdtemp(prefix="reward_portable-")))
    for run_dir in runs:
        tok = AutoTokenizer.from_pretrained(run_dir / "model")
        frame = len(tok("a").input_ids) - len(tok("a", add_special_tokens=False).input_ids)
        pairs = [(p, r) for p, r in hh_pairs(assets, 10 * a.pairs)
                 if len(tok(r, add_special_tokens=False).input_ids) + frame < tok.model_max_length][: a.pairs]
        inside = inside_scores(run_dir, pairs)
        one_line, trl = outside_scores(run_dir / "model", pairs)
        print(f"\n{run_dir} ({len(pairs)} HH pairs)")
        print(f"{'pair':>4} {'inside':>10} {'one line':>10} {'TRL GRPO':>10}")
        for i, (x, y, z) in enumerate(zip(inside, one_line, trl, strict=True)):
            print(f"{i:>4} {x:>10.5f} {y:>10.5f} {z:>10.5f}")
        print(f"max |inside - one line| = {max(abs(x - y) for x, y in zip(inside, one_line, strict=True)):.2e}; "
              f"max |inside - TRL GRPO| = {max(abs(x - z) for x, z in zip(inside, trl, strict=True)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
