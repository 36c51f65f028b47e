"""A full disk while a checkpoint is written (rlhf.run.diskfull), on a real 3 MB tmpfs: the run ends with one
message naming the checkpoint, status `failed`, no stray temp file; once there is space, the relaunch
never resumes from the partial checkpoint (it starts over, saying so) and finishes.

The tmpfs is mounted as root, or else in a user+mount namespace (`unshare -rm`, no root needed);
where neither is allowed the test is skipped, saying why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from reliability_harness import QUIET, _env, rlhf_exe

ARGS = [*QUIET, "trainer.max_steps=6", "trainer.save_steps=2", "trainer.eval_strategy=no", "stage.eval_before=false"]
SCRIPT = """
set -u
mount -t tmpfs -o size=3m tmpfs "$D" || exit 90
"$RLHF" "$@" run_dir="$D/run" > "$OUT/first.log" 2>&1; echo $? > "$OUT/first.rc"
cp "$D/run/status.json" "$OUT/status_full.json"; ls -a "$D/run" > "$OUT/files_full.txt"
mount -o remount,size=64m "$D"
"$RLHF" "$@" run_dir="$D/run" > "$OUT/second.log" 2>&1; echo $? > "$OUT/second.rc"
cp "$D/run/status.json" "$OUT/status_final.json"; cp "$D/run/metrics.json" "$OUT/metrics.json"
umount "$D" 2>/dev/null || true
"""


def _shell() -> list[str] | None:
    if os.geteuid() == 0 and shutil.which("mount"):
        return ["bash", "-c"]
    if shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-rm", "bash", "-c"]
    return None


@pytest.mark.slow
def test_disk_full_while_checkpointing_fails_with_one_message_and_the_relaunch_starts_over(tmp_path):
    shell = _shell()
    if shell is None:
        pytest.skip("cannot mount a tmpfs here (not root, and no user namespaces for `unshare -rm`)")
    d, out = tmp_path / "small", tmp_path / "out"
    d.mkdir()
    out.mkdir()
    env = {**os.environ, **_env(tmp_path / "runs"), "D": str(d), "OUT": str(out), "RLHF": rlhf_exe()}
    done = subprocess.run([*shell, SCRIPT, "disk-full", *ARGS], env=env, capture_output=True, text=True, timeout=900)
    if done.returncode == 90:
        pytest.skip(f"mounting a tmpfs was refused: {done.stderr[-500:]}")
    first = (out / "first.log").read_text()
    assert (out / "first.rc").read_text().strip() == "2", first[-3000:]
    assert "Traceback" not in first, first[-3000:]
    errors = [ln for ln in first.splitlines() if ln.startswith("rlhf: error:")]
    assert errors == [f"rlhf: error: no space left on device while writing {d}/run/checkpoints/checkpoint-2: free "
                      "space (or set run_dir= on a larger disk) and relaunch the same command; it resumes from the "
                      "newest complete checkpoint"], first[-3000:]
    status = json.loads((out / "status_full.json").read_text())
    assert status["status"] == "failed" and "no space left on device" in status["error"]
    assert ".status.json.tmp" not in (out / "files_full.txt").read_text().split()

    second = (out / "second.log").read_text()
    assert (out / "second.rc").read_text().strip() == "0", second[-3000:]
    assert "not resuming from" in second and "checkpoint-2" in second and "starting over" in second
    assert json.loads((out / "status_final.json").read_text())["status"] == "finished"
    metrics = json.loads((out / "metrics.json").read_text())
    assert "resumed_from_step" not in metrics and metrics["train_steps"] == 6
