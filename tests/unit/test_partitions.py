"""The BFCM season's first day is configuration, checked when the definitions load."""

from __future__ import annotations

import pytest

from mail_pipeline.settings import SettingsError, bfcm_season_start


def test_the_season_starts_on_november_1_unless_the_deployment_says_otherwise() -> None:
    def start(text: str) -> tuple[int, int]:
        return bfcm_season_start({"MAIL_PIPELINE_BFCM_SEASON_START": text})

    assert bfcm_season_start({}) == start("") == (11, 1)
    assert start("11-20") == (11, 20)
    assert start(" 10-15 ") == (10, 15)


@pytest.mark.parametrize("text", ["12-01", "09-30", "11-31", "Nov 1", "11", "1-2-3"])
def test_a_start_outside_october_and_november_or_not_a_day_is_refused(text: str) -> None:
    with pytest.raises(SettingsError, match="MAIL_PIPELINE_BFCM_SEASON_START"):
        bfcm_season_start({"MAIL_PIPELINE_BFCM_SEASON_START": text})
