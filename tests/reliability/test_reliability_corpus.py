"""Every bad input of the corpus (tests/reliability/reliability_corpus.py) gets one clear error: exit 2, a message
naming the field or file:line, no traceback, nothing written and every earlier run byte-identical."""

from __future__ import annotations

import pytest
from reliability_corpus import CORPUS, try_case


def _param(case):
    marks = []
    if case.slow:
        marks.append(pytest.mark.slow)
    return pytest.param(case, id=case.id, marks=marks)


def test_the_corpus_is_large_and_covers_data_config_and_artifacts():
    from reliability_corpus import ARTIFACTS, CONFIG, DATA

    assert len(CORPUS) >= 60 and len({c.id for c in CORPUS}) == len(CORPUS)
    assert min(len(DATA), len(CONFIG), len(ARTIFACTS)) >= 15


@pytest.mark.parametrize("case", [_param(c) for c in CORPUS])
def test_bad_input_gets_one_clear_error(case, reliability_root):
    root, fixtures = reliability_root
    verdict = try_case(case, root, fixtures)
    assert verdict.kind == "clear", f"{case.id}: {verdict.kind}: {verdict.detail}"
