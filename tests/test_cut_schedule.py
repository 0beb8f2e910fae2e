import pytest

from artgen.errors import UsageError
from artgen.objective import CutPlan, parse_cut_schedule
from artgen.settings import RunSettings


def test_disco_schedule_syntax():
    counts = parse_cut_schedule("[12]*400+[4]*600", "cut-overview")
    assert len(counts) == 1000 and counts[0] == 12 and counts[399] == 12 and counts[400] == 4


@pytest.mark.parametrize("text", ["[12]*400", "12*1000", "[a]*1000", "[1]*500+__import__('os')", ""])
def test_bad_cut_schedules(text):
    with pytest.raises(UsageError, match="cut-overview"):
        parse_cut_schedule(text, "cut-overview")


def test_plan_follows_the_schedules_and_defaults_to_cutn():
    assert CutPlan.from_settings(RunSettings(cutn=7)).counts(0.9) == (0, 7)
    plan = CutPlan.from_settings(RunSettings(cut_overview="[12]*400+[4]*600", cut_innercut="[4]*400+[12]*600"))
    assert plan.counts(0.0) == (12, 4)
    assert plan.counts(0.5) == (4, 12)
    assert plan.counts(0.9999) == (4, 12)


def test_plan_refuses_parts_without_cutouts():
    with pytest.raises(UsageError, match="no cutouts"):
        CutPlan.from_settings(RunSettings(cut_overview="[0]*1000"))
