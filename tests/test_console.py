"""console.Meter: a bar on a terminal, plain log lines with rates and an ETA elsewhere."""

from __future__ import annotations

import logging

import pytest

from insarwatch.console import Meter


def test_meter_off_a_terminal_logs_rates_and_eta_every_interval_and_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    with caplog.at_level(logging.INFO, logger="insarwatch.console"):
        with Meter("backfill", 10, "interferograms", "tiles", interval=10, clock=lambda: now[0],
                   terminal=False) as meter:
            now[0] = 4.0
            meter.advance(2, 8)  # before the interval: no line yet
            now[0] = 10.0
            meter.advance(3, 12)
            now[0] = 20.0
            meter.advance(5, 20)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "backfill: 5/10 interferograms, 0.50 interferograms/s, 2.0 tiles/s, ETA 10 s",
        "backfill: 10/10 interferograms, 0.50 interferograms/s, 2.0 tiles/s, finished",
    ]  # the end changed nothing since the last line: not logged twice


def test_meter_on_a_terminal_draws_a_bar_instead_of_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="insarwatch.console"):
        with Meter("backfill", 2, "interferograms", "tiles", interval=0, terminal=True) as meter:
            meter.advance(2, 8)
    assert not caplog.records
    assert meter.done == 2 and meter.extra == 8
