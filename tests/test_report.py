"""`rlhf report`: the reward–KL frontier from real eval.json files, with bootstrap intervals over prompts."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

import pytest
import yaml

from rlhf.report.stats import prompt_bootstrap

# Three "runs" of one sweep: the real stories260k as reference, and as policy the same model with every
# weight nudged by seeded noise of growing size (more noise, more KL), scored by VADER (gold) and
# word count (a stand-in proxy reward).
RUNS = {"0": ("dpo", 1.0, 0.02), "1": ("dpo", 0.5, 0.05), "2": ("ppo", None, 0.1)}
GROUP = "demo_dpo/sweep-a"


def _first_sentences(path: Path, n: int) -> list[str]:
    lines = path.read_text().splitlines()
    return [json.loads(line)["text"].split(". ")[0] + "." for line in lines[:n]]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, assets) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.evaluation import evaluate_policy
    from rlhf.judges import length, vader
    from rlhf.schema import Generation

    model_dir = assets / "models" / "stories260k"
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.unk_token
    reference = AutoModelForCausalLM.from_pretrained(model_dir)
    prompts = _first_sentences(assets / "data" / "tinystories" / "stories.jsonl", 12)
    gen = Generation(num_samples=2, max_new_tokens=24, seed=3)
    prompt_ids = [tok(p).input_ids for p in prompts]
    root = tmp_path_factory.mktemp("sweep")
    for name, (stage, beta, noise) in RUNS.items():
        policy = AutoModelForCausalLM.from_pretrained(model_dir)
        g = torch.Generator().manual_seed(int(noise * 1000))
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(torch.randn(p.shape, generator=g) * noise * p.std())
        ev = evaluate_policy(policy, tok, prompts, prompt_ids, gen, stop_ids=[tok.eos_token_id], reference=reference,
                             judge=vader, reward=length)
        run = root / name
        run.mkdir()
        (run / "eval.json").write_text(json.dumps(ev))
        trainer = {"beta": beta, "learning_rate": 1e-4} if stage == "dpo" else {"kl_target": 6.0}
        cfg = {"stage": {"name": stage}, "trainer": trainer, "logger": {"group": GROUP, "project": "rlhf"},
               "evaluation": {"judge": "rlhf.judges.vader", "reward_model": "rlhf.judges.length"}}
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


@pytest.mark.slow  # the sweep fixture samples from 3 policies and a reference
def test_eval_json_keeps_the_per_sample_numbers(sweep):
    ev = json.loads((sweep / "1" / "eval.json").read_text())
    per = ev["per_sample"]
    assert per["prompt_index"] == [i for i in range(12) for _ in range(2)]  # each prompt's 2 samples
    assert len(per["kl"]) == len(per["gold_policy"]) == len(per["rm_reference"]) == ev["n_samples"] == 24
    assert mean(per["kl"]) == pytest.approx(ev["kl"], abs=1e-4)
    assert mean(per["gold_policy"]) == pytest.approx(ev["gold_policy"])
    assert mean(per["rm_reference"]) == pytest.approx(ev["rm_reference"])


def test_prompt_bootstrap_resamples_prompts_not_samples():
    # two prompts, means 0 and 1: resampled means are 0, 1/2, 1 with odds 1/4, 1/2, 1/4 -> [0, 1]
    iv = prompt_bootstrap([0.0, 0.0, 1.0, 1.0], [0, 0, 1, 1])
    assert (iv.mean, iv.low, iv.high, iv.n_prompts, iv.n_samples) == (0.5, 0.0, 1.0, 2, 4)
    # 50 prompts, each answered twice the same way: the samples of a prompt carry one prompt's worth of
    # information, so the interval is the one of the 50 prompt means, not of 100 independent samples
    values = [float(i % 2) * 2.0 for i in range(50) for _ in range(2)]
    prompts = [i for i in range(50) for _ in range(2)]
    clustered = prompt_bootstrap(values, prompts, seed=1)
    per_prompt = prompt_bootstrap(values[::2], prompts[::2], seed=1)
    naive = prompt_bootstrap(values, list(range(100)), seed=1)
    assert (clustered.low, clustered.high) == pytest.approx((per_prompt.low, per_prompt.high), abs=0.05)
    assert clustered.high - clustered.low > 1.3 * (naive.high - naive.low)  # about sqrt(2) wider
    se = 1.0 / 50**0.5  # sd 1 of the prompt means (0 or 2), 50 prompts
    assert clustered.high - clustered.low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert prompt_bootstrap(values, prompts, seed=1) == clustered  # seeded: the same every time
    with pytest.raises(ValueError):
        prompt_bootstrap([1.0], [0, 1])


@pytest.mark.slow  # the sweep fixture samples from 3 policies and a reference
def test_report_draws_from_zero_with_intervals_n_and_judge(sweep):
    from rlhf.report.frontier import collect, interval_note, judge_names, main
    from rlhf.report.plot import figure

    assert main([str(sweep), "--no-wandb"]) == 0
    png = sweep / "frontier.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {r["run"]: r for r in json.loads((sweep / "frontier.json").read_text())}
    per = json.loads((sweep / "2" / "eval.json").read_text())["per_sample"]
    for key, values in (("kl_ci", per["kl"]), ("policy_ci", per["gold_policy"]), ("rm_policy_ci", per["rm_policy"])):
        iv = prompt_bootstrap(values, per["prompt_index"])
        assert rows["2"][key] == [iv.low, iv.high], key
    gain = prompt_bootstrap([p - r for p, r in zip(per["gold_policy"], per["gold_reference"], strict=True)], per["prompt_index"])
    assert rows["2"]["gain_ci"] == [gain.low, gain.high]  # paired over prompts: same prompt, same seed
    for r in rows.values():
        assert r["kl_ci"][0] < r["kl"] < r["kl_ci"][1] and r["n_prompts"] == 12
    assert rows["0"]["kl"] < rows["1"]["kl"] < rows["2"]["kl"]  # more noise, further from the reference

    md = (sweep / "frontier.md").read_text()
    assert "Gold judge: rlhf.judges.vader" in md and "12 × 2" in md and "n = 12 prompts × 2 samples" in md
    lo, hi = rows["2"]["kl_ci"]
    assert f"{rows['2']['kl']:.2f} [{lo:.2f}, {hi:.2f}]" in md

    rows = collect(sweep)
    fig = figure(rows, judges=judge_names(rows), note=interval_note(rows))
    gold, proxy = fig.axes
    left = min(0.0, *(r["kl_ci"][0] for r in rows))
    for ax in (gold, proxy):  # from KL = 0 (the reference), or below where an interval reaches there
        assert ax.get_xlim()[0] < left <= 0.0 and ax.get_xlim()[0] > left - 0.1 * (ax.get_xlim()[1] - left)
    assert gold.get_xlim()[1] > max(r["kl_ci"][1] for r in rows)
    assert "vader" in gold.get_ylabel() and "reward-model" in proxy.get_ylabel()
    assert len(gold.containers) == 3  # error bars: the reference, dpo, ppo
    fig.canvas.draw()
    renderer, box = fig.canvas.get_renderer(), fig.bbox
    for text in [*fig.texts, *fig.legends, *(t for ax in fig.axes for t in ax.texts)]:
        ext = text.get_window_extent(renderer)
        assert box.x0 <= ext.x0 and ext.x1 <= box.x1 and box.y0 <= ext.y0 and ext.y1 <= box.y1, text


def _wandb_run_group(run_dir: Path) -> str:
    """The group in the run record of an offline run's `.wandb` file: W&B's LevelDB-style log (a 7-byte
    file header, then records of crc32(4) length(2, little-endian) type(1: full, 2-4: first/middle/last)
    in 32 KiB blocks), each a `wandb_internal_pb2.Record`."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("*.wandb")
    data, pos, block, parts = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        parts, pos = (b"" if kind in (1, 2) else parts) + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(parts)
            if rec.WhichOneof("record_type") == "run":
                return rec.run.run_group
    raise AssertionError(f"no run record in {path} ({len(data)} bytes)")


@pytest.mark.slow  # the sweep fixture samples from 3 policies and a reference
def test_report_run_joins_the_sweeps_wandb_group(sweep, cli):
    res = cli("report", str(sweep), env={"WANDB_MODE": "offline"})  # the process exit flushes the W&B log
    assert res.returncode == 0, res.stderr[-2000:]
    (run,) = (sweep / "wandb").glob("offline-run-*")
    assert _wandb_run_group(run) == GROUP


@pytest.mark.slow
def test_report_reads_an_eval_json_without_per_sample_numbers(sweep, tmp_path):
    from rlhf.report.frontier import main

    ev = json.loads((sweep / "1" / "eval.json").read_text())
    del ev["per_sample"]  # written before eval.json kept them: means only, no intervals
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "eval.json").write_text(json.dumps(ev))
    assert main([str(tmp_path), "--no-wandb"]) == 0
    (row,) = json.loads((tmp_path / "frontier.json").read_text())
    assert "kl_ci" not in row and row["kl"] == ev["kl"]
    assert "no per-sample data" in (tmp_path / "frontier.md").read_text()
    assert (tmp_path / "frontier.png").is_file()


@pytest.mark.slow
def test_report_names_and_skips_a_broken_eval_json(sweep, tmp_path, capsys):
    """A truncated eval.json (a run killed while writing it) and one without `kl`: each named on stderr
    and left out; the frontier is drawn from the rest (was: JSONDecodeError / KeyError tracebacks)."""
    from rlhf.report.frontier import main

    text = (sweep / "1" / "eval.json").read_text()
    for name in ("good", "cut", "nokl"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text((sweep / "1" / "config.yaml").read_text())
    (tmp_path / "good" / "eval.json").write_text(text)
    (tmp_path / "cut" / "eval.json").write_text(text[: len(text) // 2])
    ev = json.loads(text)
    del ev["kl"]
    (tmp_path / "nokl" / "eval.json").write_text(json.dumps(ev))
    assert main([str(tmp_path), "--no-wandb"]) == 0
    err = capsys.readouterr().err
    assert f"skipping {tmp_path / 'cut' / 'eval.json'}: not valid JSON" in err
    assert f"skipping {tmp_path / 'nokl' / 'eval.json'}: kl: missing" in err
    assert [r["run"] for r in json.loads((tmp_path / "frontier.json").read_text())] == ["good"]


@pytest.mark.slow
def test_report_gives_an_eval_only_round_no_training_knobs(sweep, tmp_path):
    """Rejection sampling's rounds are evaluated by a `stage=eval` step: its trainer section is the eval
    stage's defaults, not the SFT step's, so the row shows no learning rate or beta (was: eval's 5e-4)."""
    from rlhf.report.frontier import main

    (tmp_path / "round1_eval").mkdir()
    (tmp_path / "round1_eval" / "eval.json").write_text((sweep / "1" / "eval.json").read_text())
    cfg = {"stage": {"name": "eval"}, "trainer": {"learning_rate": 5e-4, "beta": 0.1},
           "rounds_of": "rejection_sampling", "round": 1, "evaluation": {"judge": "rlhf.judges.vader"}}
    (tmp_path / "round1_eval" / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main([str(tmp_path), "--no-wandb"]) == 0
    (row,) = json.loads((tmp_path / "frontier.json").read_text())
    assert (row["method"], row["knob"], row["learning_rate"], row["beta"]) == ("rejection_sampling", "round 1", None, None)


@pytest.mark.slow
def test_report_kl_max_ends_the_axis_and_names_the_points_beyond(sweep, capsys):
    """`--kl-max`: the figure shows the low-KL range (one far point no longer squeezes the rest) and
    says which points lie beyond; the table keeps every run; a bad value is one error, exit 2."""
    from rlhf.report.frontier import collect, interval_note, judge_names, main
    from rlhf.report.plot import figure

    rows = collect(sweep)
    kls = sorted(r["kl"] for r in rows)
    cut = (kls[-2] + kls[-1]) / 2  # between the two farthest runs
    fig = figure(rows, judges=judge_names(rows), note=interval_note(rows), kl_max=cut)
    far = max(rows, key=lambda r: r["kl"])
    for ax in fig.axes:
        assert ax.get_xlim()[1] < far["kl"]
        notes = [t.get_text() for t in ax.texts if "beyond" in t.get_text()]  # (the others: the points' labels)
        assert notes == [f"1 point(s) beyond {cut:g} nats: {far['method']} {far['kl']:.0f}"]
    assert main([str(sweep), "--no-wandb", "--kl-max", f"{cut}"]) == 0
    assert len(json.loads((sweep / "frontier.json").read_text())) == len(rows)
    capsys.readouterr()
    assert main([str(sweep), "--no-wandb", "--kl-max", "0"]) == 2
    err = capsys.readouterr().err
    assert "--kl-max: expected a number of nats > 0, got 0" in err and "Traceback" not in err
