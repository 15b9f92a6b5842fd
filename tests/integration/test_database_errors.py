"""A failed statement never carries a row's personal data in its error (SQLite and
PostgreSQL): the app's engines hide bound parameters, and PostgreSQL's row detail is cut."""

from __future__ import annotations

import traceback
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Campaign, Recipient

EMAIL = "ada.lovelace@example.com"
ADDRESS = "12 Analytical Engine Row"


def test_a_failing_insert_does_not_show_the_rows_values(
    db_url: str, make_campaign: Callable[..., tuple[int, int]]
) -> None:
    _, campaign_id = make_campaign()
    with pytest.raises(sa.exc.IntegrityError) as failed, unit_of_work(db_url) as session:
        org_id = session.get_one(Campaign, campaign_id).organization_id
        session.execute(
            sa.insert(Recipient),
            [
                {
                    "organization_id": org_id,
                    "campaign_id": campaign_id,
                    "status": None,  # NOT NULL: the insert fails
                    "email": EMAIL,
                    "first_name": "Ada",
                    "address1": ADDRESS,
                }
            ],
        )
    texts = [
        str(failed.value),
        str(failed.value.orig),
        "".join(traceback.format_exception(failed.value)),
    ]
    for text in texts:
        assert EMAIL not in text and ADDRESS not in text and "Ada" not in text
    assert "recipients" in str(failed.value)  # still says which table failed
    assert "parameters hidden" in str(failed.value)


@pytest.mark.postgres
def test_postgresql_connections_time_out_and_keep_alive_unless_the_url_says_otherwise(
    db_url: str,
) -> None:
    from mail_pipeline.db.engine import PG_CONNECT_DEFAULTS, dispose_engine, engine_for

    url = db_url + ("&" if "?" in db_url else "?") + "connect_timeout=7"
    try:
        with engine_for(url).connect() as conn:
            params = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    finally:
        dispose_engine(url)
    assert params["connect_timeout"] == "7", "the URL's own setting wins"
    for key in ("keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"):
        assert params[key] == str(PG_CONNECT_DEFAULTS[key])
