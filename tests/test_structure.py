"""The package's shape: imports point one way, models load in one place, no shared tokenizer is flipped."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Folder -> the package it is installed as (pyproject.toml: package-dir).
PACKAGES = {"rlhf": "rlhf", "data": "rlhf.data", "reward": "rlhf.reward"}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ours that `name` imports, at the top or inside functions."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):  # a module's own parent package is not an edge
                found.add(t)
    return found


def test_the_import_graph_has_no_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    # the intended direction: the CLI reaches the stages through the pipeline/runner, never back
    assert "rlhf.cli" not in {m for n, deps in graph.items() if n != "rlhf.__main__" for m in deps}
    assert not any(d.startswith("rlhf.stages") for d in graph["rlhf.distributed"] | graph["rlhf.run.artifacts"])
    assert not any(d.startswith(("rlhf.stages", "rlhf.cli")) for n in modules if n.startswith(("rlhf.data",
                                                                                             "rlhf.reward"))
                   for d in graph[n])
    # the two wings: a run directory's life knows nothing of the stages, the report or the CLI; the
    # report asks the stages for their facts (labels, knobs) and nothing else of them
    def wing(n: str, w: str) -> bool:
        return n == w or n.startswith(w + ".")

    for n in modules:
        if wing(n, "rlhf.run"):
            assert not any(wing(d, w) for d in graph[n] for w in ("rlhf.stages", "rlhf.report", "rlhf.cli",
                                                                  "rlhf.pipeline", "rlhf.runner")), n
        if wing(n, "rlhf.report"):
            assert not any(wing(d, w) for d in graph[n] for w in ("rlhf.cli", "rlhf.pipeline", "rlhf.runner")), n
            assert {d for d in graph[n] if wing(d, "rlhf.stages")} <= {"rlhf.stages"}, n
    # validation does not load the stages; the stages use it (rlhf.runner puts the two together)
    assert not any(d.startswith("rlhf.stages") for d in graph["rlhf.config"])
    # the facts of a stage are asked, not listed: memory and checkpoint sizes are told what to count
    assert not any(d.startswith("rlhf.stages") for d in graph["rlhf.memory"] | graph["rlhf.checkpoint_size"])


def _module_aliases(name: str, path: Path, known: set[str]) -> dict[str, str]:
    """Local names bound to one of our modules in `name` (`from .. import distributed`, `import rlhf.x as y`)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            for a in node.names:
                if f"{mod}.{a.name}" in known:
                    out[a.asname or a.name] = f"{mod}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in known and a.asname:
                    out[a.asname] = a.name
    return out


def test_no_module_calls_another_modules_private_names():
    """One owner per concern: `other._name` (or `from other import _name`) on a module of ours is refused."""
    modules = _modules()
    known = set(modules)
    offenders = []
    for name, path in modules.items():
        aliases = _module_aliases(name, path, known)
        is_pkg = path.name == "__init__.py"
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
            if isinstance(node, ast.ImportFrom):
                mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else node.module
                if mod in known and mod != name:
                    offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: from {mod} import {a.name}"
                                  for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders, offenders


def test_the_package_stays_small_enough_to_read():
    """At most ~18 modules at the top of rlhf/ (the rest lives in its wings: run/, report/, stages/,
    ppo/), and no module over 400 lines."""
    top = [p.name for p in (ROOT / "rlhf").glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= 18, sorted(top)
    long = {str(p.relative_to(ROOT)): n for name, p in _modules().items()
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_models_and_tokenizers_load_only_in_models_py():
    offenders = []
    for name, path in _modules().items():
        if name == "rlhf.models":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"\.from_pretrained\(", code) or re.search(r"\bpadding_side\s*=[^=]", code):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, offenders


def test_plain_pytest_collects_the_suite():
    """`pytest` (not only `python -m pytest`) imports every test module."""
    exe = Path(sys.executable).parent / "pytest"
    res = subprocess.run([str(exe), "--collect-only", "-q", "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "error" not in res.stdout.lower().splitlines()[-1]


def test_sampling_stages_take_every_kind_the_prompt_encoder_reads():
    """The stages' start-up list of prompt kinds (plain names, no data-layer import) is the encoder's."""
    from rlhf.data import PromptEncoder
    from rlhf.stages import critic_free, eval, generate, inputs, ppo

    assert inputs.PROMPT_KINDS == PromptEncoder.kinds
    assert {m.DATA_KINDS for m in (critic_free, eval, generate, ppo)} == {PromptEncoder.kinds}
