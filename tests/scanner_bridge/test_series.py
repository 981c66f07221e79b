"""Which of a session's series is a run's: the rule the controller gives its receiver."""

from __future__ import annotations

import pytest

from db.base import ProtocolError
from scanner_bridge import SeriesChoice, SeriesInfo


def series(
    name: str, began: float, shape: tuple[int, int, int] = (64, 64, 36), tr_s: float = 2.0
) -> SeriesInfo:
    path = f"/export/{name}.dcm"
    return SeriesInfo(series=name, first_file=path, shape=shape, dtype="<i2", tr_s=tr_s, began=began)


SESSION = [
    series("2/1.2.3.2", 10.0, shape=(256, 256, 3), tr_s=0.008),  # the localizer
    series("3/1.2.3.3", 20.0),  # run 1
    series("4/1.2.3.4", 30.0),  # a test run, aborted before run 2's plan went
    series("5/1.2.3.5", 40.0, tr_s=1.0),  # a reference scan of the run's grid, at another TR
    series("6/1.2.3.6", 50.0),  # run 2
    series("7/1.2.3.7", 60.0),  # run 2 started again
]


def test_a_run_is_the_first_series_of_its_grid_and_tr_that_began_after_its_plan() -> None:
    grid = SeriesChoice(shape=(64, 64, 36), tr_s=2.0, exclude=frozenset({"3/1.2.3.3"}))
    before_the_plan = [s.series for s in SESSION[:3]]  # what the bridge held when run 2's plan went
    choice = grid.but_not(before_the_plan)
    picked = choice.pick(SESSION)
    assert picked is not None
    assert picked.series == "6/1.2.3.6"  # not the localizer, run 1, the aborted test, the reference scan
    assert choice.pick(SESSION[:4]) is None  # until run 2 begins: nothing
    assert "of shape 64x64x36, TR 2 s" in choice.describe()


def test_a_run_picked_up_after_a_restart_takes_its_recorded_series_or_the_newest_that_fits() -> None:
    picked = SeriesChoice(name="6/1.2.3.6").pick(SESSION)
    assert picked is not None
    assert picked.series == "6/1.2.3.6"
    by_number = SeriesChoice(name="6").pick(SESSION)
    assert by_number is not None
    assert by_number.series == "6/1.2.3.6"
    newest = SeriesChoice(shape=(64, 64, 36), tr_s=2.0, exclude=frozenset({"3/1.2.3.3"}), newest=True)
    picked = newest.pick(SESSION)
    assert picked is not None
    assert picked.series == "7/1.2.3.7"


def test_a_catalog_entry_that_is_not_one_is_refused_as_malformed() -> None:
    entry = series("3/1.2.3.3", 20.0).to_wire()
    assert SeriesInfo.from_wire(entry) == series("3/1.2.3.3", 20.0)
    for bad in ({**entry, "shape": [64, 64]}, {**entry, "tr_s": -2}, {**entry, "series": ""}, [entry]):
        with pytest.raises(ProtocolError, match="malformed"):
            SeriesInfo.from_wire(bad)
