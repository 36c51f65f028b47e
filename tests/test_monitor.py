"""Over-optimisation seen while it happens (rlhf.monitor, rlhf.monitor.audit): the signals and firings on
hand-made evaluation points, the config checks, and PPO / GRPO on the embedded demo against a
deliberately hackable reward (tests/monitor_rewards.py: VADER + a bonus per negative word) with an
audit scorer that is not optimised: the monitor fires and stops the run at the step it names, the
published policy is the best audit point's and scores higher on gold than the last step's; the same
run with the honest reward fires nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.errors import UserError
from rlhf.monitor import Monitor, MonitorOptions, Rule


def _point(kl_pt=0.1, proxy=(0.5, 0.0, 1.0), audit=(0.5, 0.0, 1.0), gold=None, plen=32.0, ended=(0.0, 0.0),
           ent=(1.5, 1.5)) -> dict:
    """What evaluate_policy returns, for the fields the monitor reads: (policy mean, reference mean, reference std)."""
    r = {"kl_per_token": kl_pt, "kl": kl_pt * plen, "policy_len": plen, "reference_len": 32.0,
         "policy_ended_share": ended[0], "reference_ended_share": ended[1], "entropy_per_token": ent[0],
         "reference_entropy_per_token": ent[1]}
    for name, v in (("proxy", proxy), ("audit", audit), ("gold", gold)):
        if v is not None:
            r.update({f"{name}_policy": v[0], f"{name}_reference": v[1], f"{name}_gain": v[0] - v[1],
                      f"{name}_reference_std": v[2]})
    return r


def test_signals_fire_above_their_thresholds_and_a_stop_names_its_step():
    opt = MonitorOptions(kl_per_token=Rule(0.5), kl_growth=Rule(0.05), length_ratio=Rule(1.5), eos_drop=Rule(0.25),
                         entropy_drop=Rule(0.5), divergence=Rule(1.0, "stop"), audit_drop=Rule(0.5))
    mon = Monitor(opt)
    assert mon.observe(2, _point(kl_pt=0.08)) == [] and mon.stop is None  # growth 0.04 per step from 0
    sig = mon.signals(4, _point(kl_pt=0.3, proxy=(2.0, 0.0, 1.0), audit=(0.2, 0.0, 0.5), plen=64, ended=(0.1, 0.5),
                                ent=(0.6, 1.5)))
    assert sig["kl_growth"] == pytest.approx((0.3 - 0.08) / 2) and sig["length_ratio"] == 2.0
    assert sig["eos_drop"] == pytest.approx(0.4) and sig["entropy_drop"] == pytest.approx(0.6)
    assert sig["divergence"] == pytest.approx(2.0 - 0.4)  # gains in units of the reference's spread
    assert sig["audit_drop"] == pytest.approx(0.5 - 0.4)  # below the best point so far (step 2: 0.5)
    fired = mon.observe(4, _point(kl_pt=0.3, proxy=(2.0, 0.0, 1.0), audit=(0.2, 0.0, 0.5), plen=64, ended=(0.1, 0.5),
                                  ent=(0.6, 1.5)))
    assert {f["monitor"] for f in fired} == {"kl_growth", "length_ratio", "eos_drop", "entropy_drop", "divergence"}
    assert mon.stop["step"] == 4 and mon.stop["monitor"] == "divergence"
    assert mon.summary()["stopped_at_step"] == 4 and mon.summary()["fired"] == sorted({f["monitor"] for f in fired})


def test_a_scorer_without_spread_over_the_reference_is_measured_in_the_pooled_spread_or_not_at_all():
    mon = Monitor(MonitorOptions())
    r = _point(proxy=(0.5, 0.0, 0.0), audit=(0.0, 0.0, 0.0))  # e.g. VADER 0.0 on every short reference sample
    r.update(proxy_pooled_std=0.25, audit_pooled_std=0.0)
    sig = mon.signals(1, r)
    assert "divergence" not in sig and "audit_drop" not in sig  # no audit spread: no unit, no signal
    r["audit_pooled_std"] = 0.5
    assert mon.signals(1, r)["divergence"] == pytest.approx(0.5 / 0.25)


def test_without_a_proxy_the_reward_model_is_the_proxy_and_off_rules_never_fire():
    mon = Monitor(MonitorOptions())  # every threshold null
    r = _point(proxy=None, audit=(0.0, 0.0, 1.0))
    r.update({"rm_policy": 3.0, "rm_reference": 0.0, "rm_gain": 3.0, "rm_reference_std": 1.5})
    assert mon.signals(1, r)["divergence"] == pytest.approx(2.0)
    assert mon.observe(1, r) == [] and mon.firings == []


def test_publish_best_restores_the_best_points_weights_and_records_the_last_beside_them():
    import torch

    model = torch.nn.Linear(2, 1)
    mon = Monitor(MonitorOptions(publish="best"))
    with torch.no_grad():
        model.weight.fill_(1.0)
    mon.observe(2, _point(audit=(0.9, 0.0, 1.0), gold=(0.8, 0.0, 1.0)), model)
    with torch.no_grad():
        model.weight.fill_(2.0)
    last = _point(audit=(0.1, 0.0, 1.0), gold=(0.2, 0.0, 1.0))
    mon.observe(4, last, model)
    record = mon.restore_best(model, 4, last)
    assert torch.equal(model.weight, torch.ones(1, 2))  # the weights of step 2
    assert record["step"] == 2 and record["last_step"] == 4 and record["best_by"] == "audit"
    assert record["best"]["gold_policy"] == 0.8 and record["last"]["gold_policy"] == 0.2


def test_config_refuses_publish_best_without_points_or_ranking_and_unknown_monitors(compose):
    from rlhf.runner import validate

    with pytest.raises(UserError) as e:
        validate(compose("stage=ppo", "stage.judge=vader", "stage.value_from=policy", "monitor.publish=best",
                         "+monitor.kl_grwth.threshold=1"))
    text = str(e.value)
    assert "monitor.kl_grwth: unknown option (did you mean `kl_growth`?)" in text
    with pytest.raises(UserError) as e:
        validate(compose("stage=ppo", "stage.judge=vader", "stage.value_from=policy", "monitor.publish=best",
                         "monitor.divergence.action=halt"))
    assert "monitor.divergence.action: 'halt' (str) is not one of warn, stop" in str(e.value)
    with pytest.raises(UserError) as e:
        validate(compose("stage=ppo", "stage.judge=vader", "stage.value_from=policy", "monitor.publish=best"))
    assert "set evaluation.every_steps=N" in str(e.value) and "nothing to rank the points by" in str(e.value)
    validate(compose("stage=ppo", "stage.judge=vader", "stage.value_from=policy", "monitor.publish=best",
                     "evaluation.every_steps=2", "evaluation.judge=vader"))


def test_the_cli_refuses_a_bad_monitor_config_with_one_message_and_exit_2(cli, tmp_path):
    res = cli("stage=ppo", "stage.judge=vader", "stage.value_from=policy", "logger=none", "monitor.publish=best",
              "monitor.entropy_drop.threshold=often", f"run_dir={tmp_path / 'ppo'}")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "monitor.entropy_drop.threshold: expected a number, got 'often' (str)" in res.stderr
    assert "monitor.publish=best: the best policy is chosen among the evaluation points" in res.stderr  # all at once
    assert not (tmp_path / "ppo").exists() and not (tmp_path / "runs").exists()


def test_a_wrong_audit_entry_is_one_clear_error_before_anything_is_written(compose, tmp_path, sft):
    from rlhf.runner import run_stage

    with pytest.raises(UserError) as e:
        run_stage(compose("stage=ppo", "logger=none", "debug=smoke", "stage.judge=vader", "stage.value_from=policy",
                          "evaluation.every_steps=1", f"evaluation.audit_reward_models=[vader,no_such_module.fn,{sft}]"),
                  tmp_path / "ppo")
    text = str(e.value)
    assert "evaluation.audit_reward_models[1]: cannot import 'no_such_module.fn'" in text
    assert "evaluation.audit_reward_models[2]:" in text and "reward" in text  # a policy is not a reward model
    assert not (tmp_path / "ppo").exists()


# ---- the "Done when" runs ------------------------------------------------------------------------
# Drift (KL, its growth) is as fast with the honest reward as with the hackable one at these learning rates,
# so those monitors are off here: what must separate the two runs is the over-optimisation signal.
MONITOR = ["evaluation.judge=vader", "evaluation.audit_reward_models=[monitor_rewards.lexicon_sentiment]",
           "evaluation.max_prompts=16", "evaluation.curve_prompts=16", "evaluation.generation.max_new_tokens=32",
           "monitor.publish=best", "monitor.divergence.action=stop", "monitor.kl_per_token.threshold=null",
           "monitor.kl_growth.threshold=null", "data.max_rows=256", "logger=none"]
PPO = ["stage=ppo", "stage.value_from=policy", "trainer.total_iterations=8", "trainer.rollout_batch_size=32",
       "trainer.mini_batch_size=8", "trainer.max_new_tokens=32", "trainer.learning_rate=3e-4", "trainer.save_every=0",
       "trainer.kl_coef=0.02", "trainer.kl_control=fixed", "evaluation.every_steps=2"]


@pytest.fixture(scope="module")
def sft(tmp_path_factory, compose_any):
    from rlhf.runner import run_stage

    d = tmp_path_factory.mktemp("monitor") / "sft"
    run_stage(compose_any("logger=none", "debug=smoke", "trainer.save_strategy=no"), d)
    return d


def _history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def _check_hacked_run(art, run_dir: Path, stopped_steps: int):
    m, pub = art.metrics, art.extra["published"]
    stop = m["monitor_stopped_at_step"]
    assert m["monitor"]["stopped_by"] == "divergence" and stop == stopped_steps < 8  # stopped where it says
    fired = [h for h in _history(run_dir) if "monitor/fired/divergence" in h]
    assert [h["step"] for h in fired] == [stop] and fired[0]["monitor/fired/divergence"] > 1.0
    assert pub["step"] < stop == pub["last_step"] and pub["best_by"] == "audit"
    assert pub["best"]["gold_policy"] > pub["last"]["gold_policy"]  # the published policy is better on gold
    assert pub["best"]["proxy_policy"] < pub["last"]["proxy_policy"]  # ...though the hacked proxy says otherwise
    # what was published is the best point's policy: the final evaluation (same prompts, same seeds) repeats it
    final = json.loads((run_dir / "eval.json").read_text())
    assert final["gold_policy"] == pytest.approx(pub["best"]["gold_policy"], abs=1e-6)
    card = (run_dir / art.model_dir / "README.md").read_text()
    assert f"This is the policy of step {pub['step']}, not of the last step ({stop})" in card


@pytest.mark.slow
def test_ppo_against_a_hackable_reward_stops_and_publishes_the_best_audit_point(sft, compose, tmp_path):
    from rlhf.runner import run_stage

    d = tmp_path / "hacked"
    art = run_stage(compose(*PPO, *MONITOR, f"model.init_from={sft}", "stage.judge=monitor_rewards.hackable"), d)
    _check_hacked_run(art, d, art.metrics["iterations"])

    d = tmp_path / "honest"
    art = run_stage(compose(*PPO, *MONITOR, f"model.init_from={sft}", "stage.judge=monitor_rewards.honest"), d)
    assert art.metrics["monitor_firings"] == 0 and art.metrics["iterations"] == 8
    assert not any(k.startswith("monitor/fired/") for h in _history(d) for k in h)
    assert [p["step"] for p in art.metrics["monitor"]["points"]] == [2, 4, 6, 8]


# ---- reward-model ensembles (rlhf.monitor.ensemble) -------------------------------------------------------
def test_ensemble_aggregates_follow_coste_et_al():
    from rlhf.monitor.ensemble import aggregate

    s = [[1.0, 0.0], [3.0, 0.0]]  # two members, two samples
    assert aggregate(s, "member", member=1) == [3.0, 0.0]
    assert aggregate(s, "mean") == [2.0, 0.0] and aggregate(s, "min") == [1.0, 0.0]
    assert aggregate(s, "mean_minus_std", lam=0.5) == [2.0 - 0.5 * 1.0, 0.0]  # population std over members


@pytest.mark.slow
def test_reward_ensemble_members_load_in_transformers_and_audit_the_optimised_member(sft, compose, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.runner import run_stage

    ens = tmp_path / "rm"
    art = run_stage(compose("stage=reward", "logger=none", "debug=smoke", "trainer.save_strategy=no",
                            "model.max_length=64", f"model.init_from={sft}", "stage.ensemble=2"), ens)
    assert art.kind == "reward" and art.extra["ensemble"] == ["members/0", "members/1"]
    assert art.model_dir == "members/0/model" and len(art.metrics["members_eval_accuracy"]) == 2
    scores = []
    for i in (0, 1):
        path = ens / "members" / str(i) / "model"
        tok, model = AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification.from_pretrained(path)
        with torch.no_grad():
            scores.append(model(**tok("Once upon a time there was a happy dog.", return_tensors="pt")).logits[0, 0])
    assert scores[0] != scores[1]  # other seeds, other resamples: other models

    # PPO optimises member 0; member 1 audits it at every evaluation point without being named
    common = ["stage=ppo", "logger=none", "debug=smoke", f"model.init_from={sft}", f"stage.reward_model={ens}",
              "stage.value_from=policy", "evaluation.every_steps=1", "evaluation.max_prompts=4",
              "evaluation.generation.max_new_tokens=8"]
    ppo = run_stage(compose(*common), tmp_path / "ppo")
    assert all("audit_policy" in p and "proxy_policy" in p for p in ppo.metrics["policy_eval_curve"])
    assert "monitor/divergence" in ppo.metrics["monitor"]["points"][0]
    # ...or a conservative aggregate of both (Coste et al.'s UWO)
    uwo = run_stage(compose(*common, "stage.reward_aggregate=mean_minus_std"), tmp_path / "uwo")
    assert "audit_policy" not in uwo.metrics["policy_eval_curve"][0]  # no member left out to audit with
    from rlhf.runner import validate

    with pytest.raises(UserError, match="stage.reward_member: 2 is not a member of the 2-model ensemble"):
        validate(compose(*common, "stage.reward_member=2"))


GRPO = ["stage=grpo", "trainer.max_steps=8", "trainer.per_device_train_batch_size=32", "trainer.num_generations=4",
        "trainer.max_completion_length=32", "trainer.learning_rate=1.5e-3", "trainer.save_strategy=no",
        "trainer.logging_steps=1", "trainer.beta=0.01", "evaluation.every_steps=1"]


@pytest.mark.slow
def test_grpo_against_a_hackable_reward_stops_and_publishes_the_best_audit_point(sft, compose, tmp_path):
    from rlhf.runner import run_stage

    d = tmp_path / "hacked"
    art = run_stage(compose(*GRPO, *MONITOR, f"model.init_from={sft}", "stage.reward_funcs=[monitor_rewards.hackable]"), d)
    logged = json.loads((d / "log_history.json").read_text())
    _check_hacked_run(art, d, max(h["step"] for h in logged if "step" in h))

    d = tmp_path / "honest"
    art = run_stage(compose(*GRPO, *MONITOR, f"model.init_from={sft}", "stage.reward_funcs=[monitor_rewards.honest]"), d)
    assert art.metrics["monitor_firings"] == 0 and len(art.metrics["monitor"]["points"]) == 8


def test_evaluation_scores_audits_and_entropy_and_the_report_adds_the_audit_panel(assets, tmp_path):
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.evaluation import evaluate_policy
    from rlhf.judges import length, vader
    from rlhf.report.frontier import collect, interval_note, judge_names, markdown
    from rlhf.report.plot import figure
    from rlhf.schema import Generation

    model_dir = assets / "models" / "stories260k"
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.unk_token
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompts = ["Once upon a time, there was a little dog.", "Tom had a red ball.", "The sun was hot."]
    ev = evaluate_policy(model, tok, prompts, [tok(p).input_ids for p in prompts], Generation(num_samples=2,
                         max_new_tokens=12, seed=5), stop_ids=[tok.eos_token_id], reference=model, judge=vader,
                         scorers={"proxy": length, "audit_0": length, "audit_1": vader})
    per = ev["per_sample"]
    assert per["audit_policy"] == [(a + b) / 2 for a, b in zip(per["audit_0_policy"], per["audit_1_policy"], strict=True)]
    assert ev["audit_gain"] == pytest.approx(ev["audit_policy"] - ev["audit_reference"])
    # the same model on the same seeds: the same samples, so the same entropy estimate on each side
    assert ev["entropy_per_token"] == pytest.approx(ev["reference_entropy_per_token"]) and ev["entropy_per_token"] > 0
    for run, stage in (("a", "ppo"), ("b", "dpo")):
        (tmp_path / run).mkdir()
        (tmp_path / run / "eval.json").write_text(json.dumps(ev))
        (tmp_path / run / "config.yaml").write_text(yaml.safe_dump({"stage": {"name": stage}, "trainer": {},
                                                                    "evaluation": {"judge": "vader"}}))
    rows = collect(tmp_path)
    assert all(r["audit_policy"] == ev["audit_policy"] and r["audit_policy_ci"] for r in rows)
    assert "audit: policy |" in markdown(rows)
    fig = figure(rows, judges=judge_names(rows), note=interval_note(rows))
    assert len(fig.axes) == 2 and "audit" in fig.axes[-1].get_ylabel()  # gold, audit (no RM in these runs)


def test_per_sentence_vader_keeps_resolving_where_the_whole_text_saturates():
    from rlhf.judges import resolve, vader

    happy = "Lily was happy. She loved her good dog. They played and laughed all day. It was a great, fun day."
    one_sad = happy.replace("They played and laughed all day.", "Then the dog was hurt and Lily cried.")
    whole = vader([""] * 2, [happy, one_sad])
    per = resolve("vader_sentences")([""] * 2, [happy, one_sad])
    assert whole[0] > 0.95 and whole[0] - whole[1] < per[0] - per[1]  # one sad sentence moves the mean more
    assert resolve("vader_sentences")([""], [""]) == [0.0]
