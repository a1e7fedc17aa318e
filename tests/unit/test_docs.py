"""The docs tell the truth about the settings."""

from __future__ import annotations

from tools.config_docs import DOC, table


def test_the_settings_table_is_up_to_date() -> None:
    assert table() in DOC.read_text(), "run: python -m tools.config_docs"
