"""Held out means held out: every row kind splits by its prompt, and a prompt keeps its side in
every stage (issue 21; /work/shared/cases/trust-3/held-out-split)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf.data import (
    DataConfig,
    PreferenceEncoder,
    PromptEncoder,
    RewardEncoder,
    SFTEncoder,
    format_preflight,
    load_splits,
    preflight,
)
from rlhf.data.split import prompt_key
from rlhf.errors import UserError

CASE = Path(__file__).resolve().parents[2] / ".." / "shared" / "cases" / "trust-3" / "held-out-split"
N_PROMPTS, PER_PROMPT = 30, 4  # several rows per prompt: a per-row split puts most prompts on both sides


def _rows(kind: str, shape: str) -> list[dict]:
    out = []
    for p in range(N_PROMPTS):
        q = f"Tell me story {p}."
        for k in range(PER_PROMPT):
            a, b = f" Once a cat {k}.", f" A dog ran {k} times."
            turns = [{"role": "user", "content": q}]
            out.append({
                ("sft", "prompt"): {"prompt": q, "completion": a},
                ("sft", "messages"): {"messages": [*turns, {"role": "assistant", "content": a}]},
                ("sft", "text"): {"text": q + a},
                ("pair", "explicit"): {"prompt": q, "chosen": a, "rejected": b},
                ("pair", "implicit"): {"chosen": q + a, "rejected": q + b},
                ("pair", "implicit_turns"): {"chosen": [*turns, {"role": "assistant", "content": a}],
                                             "rejected": [*turns, {"role": "assistant", "content": b}]},
                ("ranked", "plain"): {"prompt": q, "responses": [a, b], "ranks": [0, 1]},
                # prompt-only rows: the same prompt up to whitespace (exact duplicates would be invalid)
                ("prompt", "plain"): {"prompt": q + " " * k},
                ("prompt", "turns"): {"prompt": [{"role": "user", "content": q + " " * k}]},
            }[(kind, shape)])
    return out


# (stage, encoder factory, kind, shapes): every stage's encoder over every row kind it takes
STAGES = [
    ("sft", lambda t: SFTEncoder(t, 128), "sft", ("prompt", "messages", "text")),
    ("dpo", lambda t: PreferenceEncoder(t, 128), "pair", ("explicit", "implicit", "implicit_turns")),
    ("reward", lambda t: RewardEncoder(t, 128), "pair", ("explicit", "implicit")),
    ("reward", lambda t: RewardEncoder(t, 128), "ranked", ("plain",)),
    ("ppo/grpo/rloo/generate/eval", lambda t: PromptEncoder(t, 128), "sft", ("prompt", "messages")),
    ("ppo/grpo/rloo/generate/eval", lambda t: PromptEncoder(t, 128), "pair", ("explicit", "implicit")),
    ("ppo/grpo/rloo/generate/eval", lambda t: PromptEncoder(t, 128), "ranked", ("plain",)),
    ("ppo/grpo/rloo/generate/eval", lambda t: PromptEncoder(t, 128), "prompt", ("plain", "turns")),
]


@pytest.fixture(scope="module")
def chat_tokenizer(tokenizer):
    import copy

    from rlhf.models import set_chat_template

    tok = copy.deepcopy(tokenizer)
    set_chat_template(tok, "chatml", add_bos=True)
    return tok


@pytest.mark.parametrize("stage,make,kind,shapes", STAGES, ids=[f"{s[0]}-{s[2]}" for s in STAGES])
def test_no_eval_prompt_is_a_training_prompt_in_any_stage_or_kind(stage, make, kind, shapes, chat_tokenizer,
                                                                  write_jsonl):
    for shape in shapes:
        path = write_jsonl(_rows(kind, shape), f"{kind}_{shape}.jsonl")
        for by, leaks in (("prompt", False), ("row", True)):
            cfg = DataConfig(kind=kind, source=str(path), format="canonical", eval_fraction=0.2, split_by=by)
            s = load_splits(cfg, make(chat_tokenizer))
            train, held = {prompt_key(r) for r in s.train}, {prompt_key(r) for r in s.eval}
            assert s.eval and s.train, (stage, shape)
            if not leaks:
                assert not train & held, (stage, kind, shape, sorted(train & held)[:3])
                assert len(held) == s.ledger.prompts_eval and len(train) == s.ledger.prompts_train
                assert s.ledger.prompts_shared == 0
            else:  # the old per-row split leaks: this test fails without the fix
                assert train & held and s.ledger.prompts_shared == len(train & held), (stage, kind, shape)


def test_the_case_file_holds_out_whole_prompts_and_check_says_so():
    """pairs_dup_prompts.jsonl: 10 openings x 4 pairs; by row all 6 "held-out" prompts were trained on."""
    src = str((CASE / "pairs_dup_prompts.jsonl").resolve())
    cfg = DataConfig(kind="pair", source=src, format="canonical", eval_fraction=0.2)
    s = load_splits(cfg)
    assert not {prompt_key(r) for r in s.train} & {prompt_key(r) for r in s.eval}
    assert len(s.eval) % 4 == 0 and s.eval  # whole prompts: all 4 pairs of a held-out opening
    text = format_preflight(preflight(cfg))
    assert f"split by prompt: distinct prompts train {s.ledger.prompts_train}, eval {s.ledger.prompts_eval}, " \
           "on both sides 0" in text
    old = DataConfig(kind="pair", source=src, format="canonical", eval_fraction=0.2, split_by="row")
    report = preflight(old)
    assert report["split"]["prompts_shared"] == 6 and report["split"]["eval_rows_shared"] == 8
    assert "8 eval rows (data.split_by=row) have a prompt that is also trained on" in format_preflight(report)


def test_a_prompts_side_depends_on_the_prompt_only(write_jsonl):
    """Another file holding some of the same prompts (other responses, other rows around them), and a
    TinyStories-style text row: each prompt is on the same side; a larger fraction only adds prompts."""
    a = load_splits(DataConfig(kind="pair", source=str(write_jsonl(_rows("pair", "explicit"), "a.jsonl")),
                               format="canonical", eval_fraction=0.2))
    other = [{"text": f"tell me  STORY {p}. It was sunny {p}."} for p in range(0, N_PROMPTS, 2)]
    other += [{"text": f"Unrelated opening {i}. More."} for i in range(50)]
    b = load_splits(DataConfig(kind="sft", source=str(write_jsonl(other, "b.jsonl")), format="canonical",
                               eval_fraction=0.2))
    side_a = {prompt_key(r): False for r in a.train} | {prompt_key(r): True for r in a.eval}
    side_b = {prompt_key(r): False for r in b.train} | {prompt_key(r): True for r in b.eval}
    common = side_a.keys() & side_b.keys()
    assert len(common) == N_PROMPTS // 2 and all(side_a[p] == side_b[p] for p in common)
    wider = load_splits(DataConfig(kind="pair", source=str(write_jsonl(_rows("pair", "explicit"), "c.jsonl")),
                                   format="canonical", eval_fraction=0.5))
    assert {prompt_key(r) for r in a.eval} <= {prompt_key(r) for r in wider.eval}


def _saved(tmp_path, train, test):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(train), "test": Dataset.from_list(test)}).save_to_disk(tmp_path / "dd")
    return str(tmp_path / "dd")


def test_a_datasets_own_eval_split_that_shares_prompts_is_refused_or_dropped(tmp_path):
    train = [{"prompt": f"Q{i}", "chosen": " yes", "rejected": " no"} for i in range(10)]
    test = [{"prompt": f"Q{i}", "chosen": " sure", "rejected": " nope"} for i in (1, 2, 11, 12, 13)]
    src = _saved(tmp_path, train, test)
    cfg = dict(kind="pair", source=src, format="canonical", eval_split="test")
    with pytest.raises(UserError) as e:
        load_splits(DataConfig(**cfg))
    msg = e.value.message
    assert "data.eval_split: 2 rows of split 'test'" in msg and "dd[test]:row 1: prompt: also a prompt of the training" \
        in msg and "dd[test]:row 2" in msg and "dd[test]:row 3" not in msg
    s = load_splits(DataConfig(**cfg, on_invalid="drop"))
    assert [r["prompt"] for r in s.eval] == ["Q11", "Q12", "Q13"] and len(s.train) == 10
    assert s.ledger.dropped == {"eval_prompt_in_train": 2} and s.ledger.valid == 13
    report = preflight(DataConfig(**cfg))
    assert report["split"]["eval_rows_shared"] == 2 and "training would stop" in format_preflight(report)


@pytest.mark.slow  # a subprocess of the real CLI (~10 s quiet, 70 s under load)
def test_rlhf_check_refuses_an_eval_split_that_shares_prompts(tmp_path, cli):
    train = [{"prompt": f"Tell me about day {i}.", "completion": " Sunny."} for i in range(10)]
    test = [{"prompt": "Tell me about day 3.", "completion": " Rain."}, {"prompt": "A new day.", "completion": " Ok."}]
    src = _saved(tmp_path, train, test)
    out = cli("check", "stage=sft", "data=jsonl", "data.kind=sft", f"data.source={src}", "data.eval_split=test",
              "logger=none")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "1 rows of data.eval_split 'test' have a prompt the training split trains on" in out.stderr
    assert "dd[test]:row 1" in out.stdout and "on both sides 1" in out.stdout
