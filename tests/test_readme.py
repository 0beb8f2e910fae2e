from readme_reference import README, with_reference


def test_flag_reference_is_current():
    text = README.read_text(encoding="utf-8")
    assert text == with_reference(text), "README flag reference is stale: run python tests/readme_reference.py --write"
