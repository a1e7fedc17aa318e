"""The docs tell the truth about the settings."""

from __future__ import annotations

from stream_learner.config import env_var, settings_fields
from tools.localstack import ROOT


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for f in settings_fields():
        flag = "--" + f.name.replace("_", "-")
        assert f"| `{flag}` | `{env_var(f.name)}` |" in text, flag
