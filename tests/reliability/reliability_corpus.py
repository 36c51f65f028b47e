"""The reliability corpus: bad inputs a new user gives `rlhf`, each with what the refusal must name.

A case is a command line (placeholders: {sft}/{rm} finished SFT and reward runs, {frm} a reward run
on another vocabulary, {dir} the case's own folder, {cases} ../shared/cases/reliability), the files
it needs, an optional setup that damages copies of the artifacts, and the strings the error must
contain (the field, or file:line). A case is *clear* when the run exits 2 with every expected
string, prints no traceback and writes nothing (earlier runs byte-identical); otherwise it is a
traceback, silent wrong (exit 0) or unclear (exit 2 but the message or the disk is wrong).
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reliability_harness import (
    CASES,
    QUIET,
    copy_run,
    edit_json,
    poison,
    run_inprocess,
    snapshot,
    written,
)

LEAD = "config value validation (lead)"  # cases of issue 10's value checks, built on main: counted apart in the bench


@dataclass
class Case:
    id: str
    args: list[str]
    expect: list[str]
    files: dict[str, bytes] = field(default_factory=dict)
    setup: Callable[[Path, dict], None] | None = None
    owner: str = ""  # LEAD: the value validation the lead engineer built
    slow: bool = False


@dataclass
class Verdict:
    kind: str  # clear | traceback | silent wrong | unclear
    detail: str


def jsonl(rows, bad: dict[int, bytes] | None = None) -> bytes:
    """Rows as JSON lines; `bad` replaces line n (1-based) with raw bytes."""
    lines = [json.dumps(r).encode() for r in rows]
    for n, raw in (bad or {}).items():
        lines[n - 1] = raw
    return b"\n".join(lines) + b"\n"


SFT = [{"prompt": f"Once upon a time there was a cat named Tom {i}.", "completion": f" Tom liked to play {i}."}
       for i in range(12)]
PAIRS = [{"prompt": f"One day a girl named Mia {i}.", "chosen": f" She smiled and played {i}.",
          "rejected": f" She was sad {i}."} for i in range(12)]
RANKED = [{"prompt": f"Once there was a dog {i}.", "responses": [f" It ran {i}.", f" It sat {i}.", f" It slept {i}."],
           "ranks": [0, 1, 2]} for i in range(12)]


def _row(rows, n, **change):
    out = [dict(r) for r in rows]
    out[n - 1].update(change)
    return out


SFT_FILE = [*QUIET, "stage=sft", "data=jsonl", "data.kind=sft", "data.source={dir}/x.jsonl"]
PAIR_FILE = [*QUIET, "stage=reward", "model.init_from={sft}", "model.max_length=128", "data=jsonl", "data.kind=pair",
             "data.source={dir}/x.jsonl"]
RANKED_FILE = [*PAIR_FILE[:-2], "data.kind=ranked", "data.source={dir}/x.jsonl"]
DPO = [*QUIET, "stage=dpo", "model.init_from={sft}", "data=jsonl", "data.kind=pair",
       "data.source={cases}/pairs_good.jsonl", "evaluation.enabled=false"]
PPO = [*QUIET, "stage=ppo", "model.init_from={sft}", "stage.reward_model={rm}", "evaluation.enabled=false"]
GRPO = [*QUIET, "stage=grpo", "model.init_from={sft}", "stage.reward_funcs=[vader]", "evaluation.enabled=false"]


def sft_data(name: str, data: bytes, expect: list[str], base=SFT_FILE) -> Case:
    return Case(name, list(base), expect, files={"x.jsonl": data})


DATA = [
    Case("d04_latin1", [*SFT_FILE[:-1], "data.source={cases}/d04_latin1.jsonl"], ["d04_latin1.jsonl:10: not valid UTF-8"]),
    Case("d25_not_gzip", [*SFT_FILE[:-1], "data.source={cases}/d25_not_gzip.jsonl.gz"],
         ["d25_not_gzip.jsonl.gz", "not a readable gzip file"]),
    Case("d27_margin_nan", [*PAIR_FILE[:-1], "data.source={cases}/d27_margin_nan.jsonl"],
         ["d27_margin_nan.jsonl:1: margin: expected a finite number, got nan"]),
    Case("d27b_margin_inf", [*PAIR_FILE[:-1], "data.source={cases}/d27b_margin_inf.jsonl"],
         ["d27b_margin_inf.jsonl:1: margin: expected a finite number, got inf"]),
    sft_data("empty_file", b"", ["x.jsonl has no rows"]),
    sft_data("blank_lines_only", b"\n  \n\n", ["x.jsonl has no rows"]),
    sft_data("invalid_json_line", jsonl(SFT, {3: b'{"prompt": "a", "completion": '}), ["x.jsonl:3: row: not valid JSON"]),
    sft_data("array_line", jsonl(SFT, {2: b'["a", "b"]'}), ["x.jsonl:2: row: expected a JSON object, got list"]),
    sft_data("no_known_fields", jsonl([{"question": "q"}, *SFT[1:]]),
             ["x.jsonl:1: row: expected prompt+completion, messages or text"]),
    sft_data("completion_not_string", jsonl(_row(SFT, 4, completion=7)), ["x.jsonl:4: completion: expected a string", "got int"]),
    sft_data("completion_empty", jsonl(_row(SFT, 5, completion="  ")), ["x.jsonl:5: completion: empty"]),
    sft_data("messages_not_list", jsonl([{"messages": "hi"}, *SFT[1:]]), ["x.jsonl:1: messages: expected a non-empty list"]),
    sft_data("messages_bad_role", jsonl([{"messages": [{"role": "robot", "content": "x"},
                                                       {"role": "assistant", "content": "y"}]}, *SFT[1:]]),
             ["x.jsonl:1: messages[0].role: expected one of"]),
    sft_data("messages_no_assistant", jsonl([{"messages": [{"role": "user", "content": "x"}]}, *SFT[1:]]),
             ["x.jsonl:1: messages: no assistant message"]),
    sft_data("duplicates", jsonl([SFT[0], SFT[0], *SFT[1:]]), ["x.jsonl:2: row: exact duplicate of x.jsonl:1"]),
    sft_data("utf16_file", "\n".join(json.dumps(r) for r in SFT).encode("utf-16"), ["x.jsonl:1: not valid UTF-8"]),
    sft_data("binary_garbage", bytes(range(256)) * 4, ["x.jsonl:1: row: not valid JSON", "x.jsonl:2: not valid UTF-8"]),
    sft_data("latin1_line", jsonl(SFT, {6: '{"prompt": "caf\xe9", "completion": " ok"}'.encode("latin-1")}),
             ["x.jsonl:6: not valid UTF-8 (byte 0xe9"]),
    Case("pair_missing_rejected", PAIR_FILE, ["x.jsonl:3: rejected: missing"],
         files={"x.jsonl": jsonl([*PAIRS[:2], {"prompt": "p", "chosen": "c"}, *PAIRS[3:]])}),
    Case("pair_chosen_equals_rejected", PAIR_FILE, ["x.jsonl:2: rejected: identical to chosen"],
         files={"x.jsonl": jsonl(_row(PAIRS, 2, rejected=PAIRS[1]["chosen"]))}),
    Case("pair_margin_string", PAIR_FILE, ["x.jsonl:2: margin: expected a number, got str"],
         files={"x.jsonl": jsonl(_row(PAIRS, 2, margin="high"))}),
    Case("pair_margin_bool", PAIR_FILE, ["x.jsonl:3: margin: expected a number, got bool"],
         files={"x.jsonl": jsonl(_row(PAIRS, 3, margin=True))}),
    Case("pair_prompt_null", PAIR_FILE, ["x.jsonl:4: prompt: expected a string", "got null"],
         files={"x.jsonl": jsonl(_row(PAIRS, 4, prompt=None))}),
    Case("ranked_mismatch", RANKED_FILE, ["x.jsonl:2: ranks: 2 ranks for 3 responses"],
         files={"x.jsonl": jsonl(_row(RANKED, 2, ranks=[0, 1]))}),
    Case("ranked_negative", RANKED_FILE, ["x.jsonl:3: ranks[1]: expected a rank >= 0"],
         files={"x.jsonl": jsonl(_row(RANKED, 3, ranks=[0, -1, 2]))}),
    Case("ranked_all_equal", RANKED_FILE, ["x.jsonl:1: ranks: expected >= 2 responses with >= 2 distinct ranks"],
         files={"x.jsonl": jsonl(_row(RANKED, 1, ranks=[1, 1, 1]))}),
    Case("source_missing", [*SFT_FILE[:-1], "data.source={dir}/nope.jsonl"], ["data.source:", "nope.jsonl", "does not exist"]),
    Case("source_is_dir", [*SFT_FILE[:-1], "data.source={dir}"], ["data.source:", "is a directory"]),
    Case("source_csv", [*SFT_FILE[:-1], "data.source={dir}/x.csv"], ["data.source:", "unsupported file type"],
         files={"x.csv": b"prompt,completion\na,b\n"}),
    Case("json_not_list", [*SFT_FILE[:-1], "data.source={dir}/x.json"], ["x.json: expected a JSON list of objects"],
         files={"x.json": json.dumps({"rows": SFT}).encode()}),
    Case("json_invalid", [*SFT_FILE[:-1], "data.source={dir}/x.json"], ["x.json:1: not valid JSON"],
         files={"x.json": b'[{"prompt": "a",'}),
    Case("json_latin1", [*SFT_FILE[:-1], "data.source={dir}/x.json"], ["x.json: not valid UTF-8"],
         files={"x.json": '[{"prompt": "caf\xe9", "completion": "x"}]'.encode("latin-1")}),
    Case("parquet_not_parquet", [*SFT_FILE[:-1], "data.source={dir}/x.parquet"], ["x.parquet: cannot read as parquet"],
         files={"x.parquet": jsonl(SFT)}),
    Case("gzip_truncated", [*SFT_FILE[:-1], "data.source={dir}/x.jsonl.gz"], ["x.jsonl.gz", "not a readable gzip file"],
         files={"x.jsonl.gz": gzip.compress(jsonl([{"text": f"Story number {i} of many."} for i in range(500)]))[:100]}),
    Case("gzip_latin1_line", [*SFT_FILE[:-1], "data.source={dir}/x.jsonl.gz"], ["x.jsonl.gz:2: not valid UTF-8"],
         files={"x.jsonl.gz": gzip.compress(jsonl(SFT, {2: '{"prompt": "na\xefve", "completion": "x"}'.encode("latin-1")}))}),
]


def _eval_split_sharing_prompts(d: Path, fixtures: dict) -> None:
    """A save_to_disk DatasetDict whose `test` split repeats two training prompts (other completions)."""
    from datasets import Dataset, DatasetDict

    test = [{"prompt": SFT[i]["prompt"], "completion": " Something else."} for i in (2, 5)]
    test += [{"prompt": f"A new opening {i}.", "completion": " Fine."} for i in range(3)]
    DatasetDict({"train": Dataset.from_list(SFT), "test": Dataset.from_list(test)}).save_to_disk(str(d / "dd"))


def _repeat(rows, n, field, index=None):
    """rows with row n's response `field` (or responses[index]) starting with the whole prompt."""
    out = [dict(r) for r in rows]
    r = out[n - 1]
    if index is None:
        r[field] = r["prompt"] + r[field]
    else:
        r[field] = [r["prompt"] + x if i == index else x for i, x in enumerate(r[field])]
    return out


# Issue 21 (trust, round 3): held-out data, tokens and curation the validation used to miss.
TRUST3_DATA = [
    Case("eval_split_shares_prompts", [*SFT_FILE[:-1], "data.source={dir}/dd", "data.eval_split=test"],
         ["data.eval_split: 2 rows of split 'test'", "dd[test]:row 1: prompt: also a prompt of the training split"],
         setup=_eval_split_sharing_prompts),
    sft_data("duplicate_key", jsonl(SFT, {3: b'{"prompt": "Once upon a time", "completion": " a", "completion": " b"}'}),
             ["x.jsonl:3: completion: given twice in one JSON object"]),
    sft_data("duplicate_key_nested", jsonl(SFT, {5: b'{"messages": [{"role": "user", "content": "Hi"}, '
                                                  b'{"role": "assistant", "content": "A", "content": "B"}]}'}),
             ["x.jsonl:5: content: given twice in one JSON object"]),
    sft_data("lone_surrogate", jsonl(SFT, {2: b'{"prompt": "A cat\ud800 sat.", "completion": " ok"}'}),
             ["x.jsonl:2: prompt: a lone surrogate U+D800 at character 6"]),
    sft_data("lone_surrogate_in_turn", jsonl(SFT, {4: b'{"messages": [{"role": "user", "content": "Hi"}, '
                                                    b'{"role": "assistant", "content": "\udfff"}]}'}),
             ["x.jsonl:4: messages[1].content: a lone surrogate U+DFFF"]),
    Case("pair_repeats_prompt", PAIR_FILE, ["x.jsonl:2: chosen: starts with the whole prompt"],
         files={"x.jsonl": jsonl(_repeat(PAIRS, 2, "chosen"))}),
    Case("ranked_repeats_prompt", RANKED_FILE, ["x.jsonl:3: responses[1]: starts with the whole prompt"],
         files={"x.jsonl": jsonl(_repeat(RANKED, 3, "responses", 1))}),
    Case("pair_margin_overflows_loss", PAIR_FILE, ["x.jsonl:3: margin: 1e+308 is beyond"],
         files={"x.jsonl": jsonl([{**r, "margin": 1e308 if i == 2 else 1.0} for i, r in enumerate(PAIRS)])}),
    Case("ranked_rank_huge", RANKED_FILE, ["x.jsonl:2: ranks[2]: expected a small rank", "1e+30"],
         files={"x.jsonl": jsonl(RANKED, {2: b'{"prompt": "p", "responses": ["a", "b", "c"], '
                                             b'"ranks": [0, 1, 1000000000000000000000000000000]}'})}),
    Case("pad_token_is_eos", [*QUIET, "model.pad_token='</s>'"], ["model.pad_token: '</s>' is the EOS token"]),
]

CONFIG = [
    Case("unknown_stage", [*QUIET, "stage=nope"], ["stage/nope"]),
    Case("unknown_model_preset", [*QUIET, "model=nope"], ["model/nope"]),
    Case("unknown_root_key", [*QUIET, "foo=1"], ["foo"]),
    Case("trainer_key_typo", [*QUIET, "trainer.learning_rat=1"], ["trainer.learning_rat"]),
    Case("trainer_key_appended", [*QUIET, "+trainer.learning_rat=1"],
         ["trainer.learning_rat: not an option of SFTConfig", "learning_rate"]),
    Case("mode", [*QUIET, "mode=fast"], ["mode: 'fast' is not one of"]),
    Case("peft_method", [*QUIET, "peft.method=foo"], ["peft.method: 'foo'"]),
    Case("report_to", [*QUIET, "logger.report_to=foo"], ["logger.report_to: 'foo'"]),
    Case("freeze_negative", [*QUIET, "model.freeze_layers=-1"], ["model.freeze_layers: must be >= 0"]),
    Case("freeze_too_many", [*QUIET, "model.freeze_layers=99"], ["model.freeze_layers: 99 is outside"]),
    Case("dtype", [*QUIET, "model.dtype=float12"], ["model.dtype: 'float12'"]),
    Case("dpo_ranked_data", [*QUIET, "stage=dpo", "model.init_from={sft}", "data=jsonl", "data.kind=ranked",
                             "data.source={cases}/pairs_good.jsonl", "evaluation.enabled=false"],
         ["data.kind: stage dpo trains on pair rows"]),
    Case("dpo_loss_type", [*DPO, "trainer.loss_type=nope"], ["trainer.loss_type: 'nope' is not a TRL DPO loss"]),
    Case("dpo_beta", [*DPO, "trainer.beta=-1"], ["trainer.beta: must be > 0"]),
    Case("dpo_label_smoothing", [*DPO, "trainer.label_smoothing=0.7"], ["trainer.label_smoothing"]),
    Case("sft_batching", [*QUIET, "stage.batching=nope"], ["stage.batching: 'nope'"]),
    Case("reward_loss_vs_data", [*PAIR_FILE[:-1], "data.source={cases}/pairs_good.jsonl", "stage.loss=kwise"],
         ["stage.loss: kwise does not fit pair rows"]),
    Case("ppo_value_from", [*PPO, "stage.value_from=nope"], ["stage.value_from: 'nope'"]),
    Case("ppo_no_reward", [*PPO[:-2], "evaluation.enabled=false"], ["stage.reward_model", "stage.judge"]),
    Case("ppo_rollout_vs_minibatch", [*PPO, "trainer.rollout_batch_size=10"], ["trainer.rollout_batch_size: 10 must be a multiple of trainer.mini_batch_size"]),
    Case("ppo_kl_estimator", [*PPO, "trainer.kl_estimator=k2"], ["kl_estimator"]),
    Case("ppo_unknown_option", [*PPO, "+trainer.kl_coeff=0.1"], ["trainer.kl_coeff: not an option of PPOConfig"]),
    Case("judge_missing_module", [*DPO[:-1], "evaluation.judge=no_such_module.score"],
         ["evaluation.judge: cannot import 'no_such_module.score'"]),
    Case("grpo_reward_func", [*GRPO[:-2], "stage.reward_funcs=[vadr]", "evaluation.enabled=false"],
         ["stage.reward_funcs:", "'vadr'", "did you mean `vader`"]),
    Case("grpo_no_reward", [*GRPO[:-2], "evaluation.enabled=false"], ["stage.reward_model", "stage.reward_funcs"]),
    Case("peft_nested_target", [*QUIET, "peft=lora", "+peft.lora.init._target_=shutil.copy", "+peft.lora.init.src=/a",
                                "+peft.lora.init.dst=/b"], ["peft.lora.init._target_"]),
    Case("peft_target_not_peft", [*QUIET, "peft=lora", "peft.lora._target_=shutil.copy"], ["peft.lora._target_: 'shutil.copy'"]),
    Case("peft_partial", [*QUIET, "peft=lora", "+peft.lora._partial_=true"], ["peft.lora._partial_"]),
    Case("peft_unknown_option", [*QUIET, "peft=lora", "+peft.lora.rank=8"], ["peft.lora: LoraConfig refused", "rank"]),
    Case("world_size", [*QUIET, "launch.world_size=0"], ["launch.world_size: must be >= 1"]),
    Case("zero_stage", [*QUIET, "deepspeed=zero2", "deepspeed.zero_optimization.stage=5"],
         ["deepspeed.zero_optimization.stage: 5"]),
    Case("nonfinite_policy", [*QUIET, "nonfinite.policy=explode"], ["nonfinite.policy: 'explode'"]),
    Case("nonfinite_max_consecutive", [*QUIET, "nonfinite.max_consecutive=0"], ["nonfinite.max_consecutive"]),
    Case("nonfinite_skip_deepspeed", [*QUIET, "nonfinite.policy=skip", "deepspeed=zero2"],
         ["nonfinite.policy=skip: not available under DeepSpeed"]),
    Case("resume_flag", [*QUIET, "resume.allow_config_change=maybe"], ["resume.allow_config_change"]),
    Case("data_on_invalid", [*QUIET, "data.on_invalid=ignore"], ["data.on_invalid: 'ignore'"]),
    Case("data_max_rows", [*QUIET, "data.max_rows=0"], ["data.max_rows: expected null or an integer >= 1"]),
    Case("data_eval_fraction", [*QUIET, "data.eval_fraction=1.5"], ["data.eval_fraction"]),
    Case("data_source_unset", [*QUIET, "data=jsonl", "data.kind=sft"], ["data.source"]),
    Case("data_unknown_key", [*QUIET, "+data.sauce=x"], ["data.sauce: unknown key", "source"]),
    Case("sweep_objective_type", [*QUIET, "sweep_objective=5"], ["sweep_objective"]),
    Case("init_from_missing", [*QUIET, "model.init_from={dir}/nope"], ["model.init_from:", "does not exist"]),
    Case("lr_not_a_number", [*QUIET, "trainer.learning_rate=abc"], ["trainer.learning_rate"], owner=LEAD),
    Case("lr_negative", [*QUIET, "trainer.learning_rate=-1"], ["trainer.learning_rate"], owner=LEAD),
    Case("batch_size_negative", [*QUIET, "trainer.per_device_train_batch_size=-4"],
         ["trainer.per_device_train_batch_size"], owner=LEAD),
    Case("grad_accumulation_zero", [*QUIET, "trainer.gradient_accumulation_steps=0"],
         ["trainer.gradient_accumulation_steps"], owner=LEAD),
    Case("ppo_zero_iterations", [*PPO, "trainer.total_iterations=0"], ["trainer.total_iterations"], owner=LEAD),
    Case("zero3_bucket_negative", [*QUIET, "deepspeed=zero3", "deepspeed.zero_optimization.reduce_bucket_size=-1"],
         ["deepspeed.zero_optimization.reduce_bucket_size"], owner=LEAD),
]


def _damage(src: str, fn: Callable[[Path], None]) -> Callable[[Path, dict], None]:
    """Setup: copy the fixture `src` (sft | rm) to {dir}/run, then `fn(copy)`."""
    def setup(d: Path, fx: dict) -> None:
        fn(copy_run(Path(fx[src]), d / "run"))
    return setup


def _remove_manifest(status: str | None):
    def fn(run: Path) -> None:
        (run / "artifact.json").unlink()
        if status is not None:
            (run / "status.json").write_text(status)
    return fn


def _dead_pid_status() -> str:
    import socket

    return json.dumps({"status": "running", "time": "2026-01-01T00:00:00+00:00", "host": socket.gethostname(),
                       "pid": 2 ** 22 + 12345})  # above pid_max's default: no such process


def _rm_tokenizer_files(run: Path) -> None:
    for name in ("tokenizer.json", "tokenizer.model", "tokenizer.model.sentencepiece"):
        (run / "model" / name).unlink(missing_ok=True)


def _truncate_weights(run: Path) -> None:
    f = run / "model" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])


SFT_FROM = [*QUIET, "model.init_from={dir}/run"]
ARTIFACTS = [
    Case("manifest_not_json", SFT_FROM, ["model.init_from:", "artifact.json is damaged (not valid JSON"],
         setup=_damage("sft", lambda r: (r / "artifact.json").write_text('{"stage": "sft", '))),
    Case("manifest_a_list", SFT_FROM, ["artifact.json is damaged (expected a JSON object, got list)"],
         setup=_damage("sft", lambda r: (r / "artifact.json").write_text("[1, 2]"))),
    Case("manifest_missing_kind", SFT_FROM, ["artifact.json is damaged: `kind` is missing"],
         setup=_damage("sft", lambda r: edit_json(r / "artifact.json", lambda m: {k: v for k, v in m.items() if k != "kind"}))),
    Case("manifest_unknown_kind", SFT_FROM, ["`kind` 'banana' is not one of"],
         setup=_damage("sft", lambda r: edit_json(r / "artifact.json", lambda m: {**m, "kind": "banana"}))),
    Case("manifest_model_dir_type", SFT_FROM, ["`model_dir` is 5"],
         setup=_damage("sft", lambda r: edit_json(r / "artifact.json", lambda m: {**m, "model_dir": 5}))),
    Case("status_corrupt", SFT_FROM, ["model.init_from:", "status.json is damaged"],
         setup=_damage("sft", _remove_manifest('{"status": "runn'))),
    Case("status_running_dead_pid", SFT_FROM, ["did not finish", "interrupted", "is gone"],
         setup=_damage("sft", _remove_manifest(_dead_pid_status()))),
    Case("model_dir_deleted", SFT_FROM, ["model.init_from:", "model is missing"],
         setup=_damage("sft", lambda r: shutil.rmtree(r / "model"))),
    Case("config_json_corrupt", SFT_FROM, ["model.init_from:", "config.json is damaged"],
         setup=_damage("sft", lambda r: (r / "model" / "config.json").write_text("{oops"))),
    Case("rm_config_json_corrupt", [*DPO[:-1], "evaluation.reward_model={dir}/run", "evaluation.judge=vader"],
         ["evaluation.reward_model:", "config.json is damaged"],
         setup=_damage("rm", lambda r: (r / "model" / "config.json").write_text("[]"))),
    Case("tokenizer_files_missing", SFT_FROM, ["has no tokenizer files"], setup=_damage("sft", _rm_tokenizer_files)),
    Case("tokenizer_config_missing", SFT_FROM, ["tokenizer_config.json is missing"],
         setup=_damage("sft", lambda r: (r / "model" / "tokenizer_config.json").unlink())),
    Case("tokenizer_json_corrupt", SFT_FROM, ["tokenizer.json is damaged"],
         setup=_damage("sft", lambda r: (r / "model" / "tokenizer.json").write_text("{"))),
    Case("weights_truncated", SFT_FROM, ["model.safetensors is damaged"], setup=_damage("sft", _truncate_weights)),
    Case("policy_nan_weights", SFT_FROM, ["model.init_from:", "non-finite weights"],
         setup=_damage("sft", lambda r: poison(r / "model"))),
    Case("policy_inf_weights_dpo", [*QUIET, "stage=dpo", "model.init_from={dir}/run", *DPO[4:]], ["non-finite weights"],
         setup=_damage("sft", lambda r: poison(r / "model", float("inf")))),
    Case("eval_nan_policy", [*QUIET, "stage=eval", "model.init_from={dir}/run", "evaluation.judge=vader"],
         ["non-finite weights"], setup=_damage("sft", lambda r: poison(r / "model"))),
    Case("generate_nan_policy", [*QUIET, "stage=generate", "model.init_from={dir}/run", "stage.judge=vader"],
         ["non-finite weights"], setup=_damage("sft", lambda r: poison(r / "model"))),
    Case("rm_nan_weights_ppo", [*PPO[:4], "stage.reward_model={dir}/run", *PPO[5:]],
         ["stage.reward_model:", "non-finite weights"], setup=_damage("rm", lambda r: poison(r / "model"))),
    Case("rm_other_vocabulary_ppo", [*PPO[:4], "stage.reward_model={frm}", *PPO[5:]],
         ["stage.value_from=policy", "another vocabulary"]),
    Case("init_from_reward_for_sft", [*QUIET, "model.init_from={rm}"], ["holds a reward model", "needs a policy"]),
    Case("init_from_a_file", [*QUIET, "model.init_from={dir}/f.txt"], ["model.init_from:", "does not exist"],
         files={"f.txt": b"x"}),
]

DATA += TRUST3_DATA
# Issue 21 (trust, round 3): the command line means what it says; a run records what it trained.
# Each case of ../shared/cases/trust-3 has a sibling of the same kind that is not in that folder.
REPORT_TWICE = "given twice on the command line"
TRUST3 = [
    Case("key_twice", [*QUIET, "stage=dpo", "trainer.beta=0.1", "trainer.beta=2"],
         ["trainer.beta: " + REPORT_TWICE, "trainer.beta=0.1 and trainer.beta=2"]),
    Case("key_twice_drops_a_sweep_dimension", ["-m", "mode=check", "stage=reward", "data=hh_rlhf", "data.max_rows=40",
                                               "model.max_length=64,128", "model.max_length=256,512"],
         ["model.max_length: " + REPORT_TWICE, "drop a sweep dimension", "model.max_length=64,128,256,512"]),
    Case("key_twice_appended", [*QUIET, "+seed=3", "seed=4"], ["seed: " + REPORT_TWICE, "+seed=3 and seed=4"]),
    Case("group_twice", [*QUIET, "model=minilm", "model=stories260k"], ["model: " + REPORT_TWICE]),
    Case("multirun_with_cfg", ["-m", "--cfg", "job", "stage=dpo", "trainer.beta=0.1,0.5"],
         ["Only one of --run, --multirun, --cfg"]),
    Case("multirun_and_run", ["--run", "-m", "stage=dpo"], ["Only one of --run, --multirun"]),
    Case("multirun_run_dir_and_sweep_dir", ["-m", *QUIET, "run_dir={dir}/a", "hydra.sweep.dir={dir}/b"],
         ["run_dir: under -m the members go to hydra.sweep.dir/<n>; give hydra.sweep.dir only"]),
    Case("multirun_run_dir_sweep", ["-m", *QUIET, "run_dir={dir}/a,{dir}/b"], ["run_dir:", "hydra.sweep.dir=<dir>"]),
    Case("experiment_name_escapes", [*QUIET, "experiment_name=../../escaped"],
         ["experiment_name: '../../escaped' would put the run outside the runs dir"]),
    Case("experiment_name_absolute", [*QUIET, "experiment_name=/tmp/rlhf-escaped"],
         ["experiment_name: '/tmp/rlhf-escaped' would put the run outside the runs dir"]),
    Case("seed_overflow", [*QUIET, "seed=4294967296"], ["seed: 4294967296 is out of range: 0 to 2**32-1"]),
    Case("seed_negative", [*QUIET, "seed=-1"], ["seed: -1 is out of range"]),
    Case("generation_seed_overflow", [*QUIET, "stage=eval", "model.init_from={sft}", "evaluation.judge=vader",
                                      "evaluation.generation.seed=4294967296"],
         ["evaluation.generation.seed: must be <= 4294967295"]),
    Case("max_steps_beyond_int64", [*QUIET, "trainer.max_steps=100000000000000000000000"],
         ["trainer.max_steps: 100000000000000000000000 is out of range"]),
    Case("wandb_online_without_key", ["debug=smoke", "logger=wandb", "logger.mode=online"],
         ["W&B online (logger.mode=online) needs an API key", "logger.mode=offline", "logger=none"]),
    Case("init_from_other_model_sft", [*QUIET, "model=minilm", "model.init_from={sft}"],
         ["model.init_from:", "holds a model trained from", "model_type llama vs bert"]),
    Case("init_from_other_model_reward", [*PAIR_FILE[:2], "model=minilm", *PAIR_FILE[2:-1],
                                          "data.source={cases}/pairs_good.jsonl"],
         ["model.init_from:", "model_type llama vs bert"]),
    Case("manifest_model_dir_null", SFT_FROM, ["model.init_from:", "artifact.json: `model_dir` is null"],
         setup=_damage("sft", lambda r: edit_json(r / "artifact.json", lambda m: {**m, "model_dir": None}))),
    Case("manifest_tokenizer_dir_null_dpo", [*QUIET, "stage=dpo", "model.init_from={dir}/run", *DPO[4:]],
         ["model.init_from:", "artifact.json: `tokenizer_dir` is null"],
         setup=_damage("sft", lambda r: edit_json(r / "artifact.json", lambda m: {**m, "tokenizer_dir": None}))),
]

CORPUS = DATA + CONFIG + ARTIFACTS + TRUST3


def try_case(case: Case, root: Path, fixtures: dict[str, Path]) -> Verdict:
    """Run one case under `root` (its runs dir is root/runs; fixtures live under root too) and judge it."""
    d = root / "cases" / case.id
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for name, data in case.files.items():
        (d / name).write_bytes(data)
    if case.setup is not None:
        case.setup(d, fixtures)
    fmt = {"dir": d, "cases": CASES, **fixtures}
    args = [a.format(**fmt) for a in case.args]
    before = snapshot(root)
    out = run_inprocess(args, root / "runs")
    changes = written(before, snapshot(root))
    if out.traceback:  # the exception's own line, not Hydra's HYDRA_FULL_ERROR hint after it
        lines = [ln for ln in out.stderr.splitlines() if ln.strip() and "HYDRA_FULL_ERROR" not in ln]
        return Verdict("traceback", lines[-1][:300] if lines else f"exit {out.code}")
    if out.code == 0:
        return Verdict("silent wrong", f"exit 0 for {' '.join(args)}")
    missing = [e.format(**fmt) for e in case.expect if e.format(**fmt) not in out.stderr]
    if missing or changes:
        return Verdict("unclear", f"message lacks {missing}; wrote {changes[:5]}; stderr: {out.stderr[-1500:]}")
    return Verdict("clear", out.message)
