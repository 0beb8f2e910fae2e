"""A reference package that cannot be imported skips its comparisons locally, and fails them under CI=true."""

import pytest
from conftest import require_reference

MISSING = "artgen_no_such_reference_module"


def test_a_missing_reference_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=MISSING):
        require_reference(MISSING)


def test_a_missing_reference_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=MISSING):
        require_reference(MISSING)


def test_a_present_module_is_returned(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require_reference("json.decoder").JSONDecoder
