"""KTO on unpaired rows: the real stories260k model, TRL's KTOTrainer, the real CLI for bad input."""

from __future__ import annotations

import json

import pytest

from rlhf.runner import run_stage as run

QUIET = ["logger=none", "trainer.save_strategy=no", "trainer.logging_steps=5"]
STORIES = ["Tom saw a big red ball in the park.", "Lily had a small cat named Sam.", "The sun was warm and bright.",
           "Ben wanted to fly a kite.", "Mia found a shiny stone by the river.", "A little bird sang in the tree."]


@pytest.fixture(scope="module")
def tokenizer(assets):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(assets / "models" / "stories260k")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _unpaired(n_good: int, n_bad: int) -> list[dict]:
    rows = []
    for i in range(n_good + n_bad):
        s = STORIES[i % len(STORIES)]
        rows.append({"prompt": f"{s} Story {i}:", "completion": f" They were happy {i}." if i < n_good
                     else f" It was sad and bad {i}.", "label": i < n_good})
    return rows


def test_pair_and_ranked_rows_split_into_unpaired_rows(tmp_path, tokenizer):
    from rlhf.data import DataConfig, UnpairedEncoder, label_counts, load_splits

    src = _write(tmp_path / "prefs.jsonl", [
        {"prompt": "Tom saw a dog.", "chosen": " It was happy.", "rejected": " It was sad."},
        {"prompt": "Lily ran.", "responses": [" Fast.", " Slow.", " Okay."], "ranks": [0, 2, 1]},
        {"prompt": "Ben sat.", "completion": " He smiled.", "label": True},
    ])
    s = load_splits(DataConfig(kind="unpaired", source=str(src), format="canonical", eval_fraction=0.0),
                    UnpairedEncoder(tokenizer, 64))
    # 3 records -> 2 (pair) + 2 (best and worst of the ranked list; the middle one is left out) + 1 rows
    assert (s.ledger.read, s.ledger.rows, s.ledger.train) == (3, 5, 5)
    by_completion = {r["completion"]: r["label"] for r in s.train}
    assert by_completion == {" It was happy.": True, " It was sad.": False, " Fast.": True, " Slow.": False,
                             " He smiled.": True}
    assert label_counts(list(s.train)) == (3, 2)
    # token for token what TRL 1.16's own KTOTrainer._prepare_dataset makes of the same rows
    from types import SimpleNamespace

    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    raw = Dataset.from_list([dict(r) for r in s.train])
    args = KTOConfig(output_dir=str(tmp_path / "o"), max_length=64, use_cpu=True, report_to="none")
    trl_rows = KTOTrainer._prepare_dataset(SimpleNamespace(_tokenizer=tokenizer, calculate_KL=False, undesirable_weight=1.0,
                                                           desirable_weight=1.0), raw, tokenizer, args, "train")
    ours = s.train_features
    assert [(r["prompt_ids"], r["completion_ids"], r["label"]) for r in trl_rows] == \
        [(r["prompt_ids"], r["completion_ids"], r["label"]) for r in ours]


def test_balanced_weights_follow_the_kto_paper():
    from rlhf.errors import UserError
    from rlhf.stages.kto import balanced_weights

    w = balanced_weights(10, 30)  # λ_D·n_D / (λ_U·n_U) = 1, inside the paper's [1, 4/3]
    assert w == {"desirable_weight": 3.0, "undesirable_weight": 1.0}
    assert balanced_weights(30, 10) == {"desirable_weight": 1.0, "undesirable_weight": 3.0}
    with pytest.raises(UserError, match="needs both labels"):
        balanced_weights(0, 5)


def test_kto_trains_exactly_the_validated_rows(compose, tmp_path):
    rows = _unpaired(18, 6)
    rows.append({"prompt": "Once upon a time " * 40, "completion": " end.", "label": True})  # fills max_length
    src = _write(tmp_path / "kto.jsonl", rows)
    cfg = compose(*QUIET, "stage=kto", "data=jsonl", "data.kind=unpaired", f"data.source={src}", "data.on_invalid=drop",
                  "data.eval_rows=4", "model.max_length=64", "trainer.max_steps=2",
                  "trainer.per_device_train_batch_size=4", "trainer.eval_strategy=no", "evaluation.max_prompts=2",
                  "evaluation.generation.max_new_tokens=8")
    m = run(cfg, tmp_path / "kto").metrics
    led = m["rows"]
    assert led["dropped"] == {"truncated_empty": 1}  # our ledger says it, instead of TRL filtering it silently
    assert led["trained"] == led["train"] == m["train_rows"] == 20  # trainer's dataset length == validated rows
    assert led["evaluated"] == led["eval"] == 4
    n_des, n_und = m["desirable_rows"], m["undesirable_rows"]
    assert n_des + n_und == 20 and n_des > n_und
    assert (m["desirable_weight"], m["undesirable_weight"], m["weights"]) == (1.0, round(n_des / n_und, 4), "balanced")
    assert m["reference_in_memory"] is True and (tmp_path / "kto/eval.json").is_file()


@pytest.mark.slow  # two CLI processes
def test_bad_unpaired_input_exits_2_before_a_model_loads(cli, tmp_path):
    bad = _write(tmp_path / "bad.jsonl", [{"prompt": "a", "completion": " b", "label": True},
                                          {"prompt": "a", "completion": " c", "label": "yes"},
                                          {"prompt": "x", "label": False}])
    common = ["stage=kto", "logger=none", "data=jsonl", "data.kind=unpaired", "data.eval_fraction=0.0"]
    res = cli(*common, f"data.source={bad}")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "bad.jsonl:2: label: expected true or false" in res.stderr
    assert "bad.jsonl:3: completion: missing" in res.stderr
    one = _write(tmp_path / "one.jsonl", _unpaired(6, 0))
    res = cli(*common, f"data.source={one}", f"run_dir={tmp_path / 'run'}")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "every training row is desirable" in res.stderr and "needs both labels" in res.stderr
    assert not (tmp_path / "run" / "model").exists()
