"""Regenerate the settings table of docs/configuration.md from the Settings fields:
``python -m tools.config_docs`` (a unit test fails when the docs are out of date)."""

from __future__ import annotations

from stream_learner.config import env_var, flag_of, settings_fields
from tools.localstack import ROOT

DOC = ROOT / "docs" / "configuration.md"
HEADER = "| flag | environment | default | commands | meaning |\n| --- | --- | --- | --- | --- |\n"


def table() -> str:
    rows = []
    for f in settings_fields():
        if f.metadata["secret"] and f.name != "redis_url":
            default = "(secret)" if f.default else "(empty)"
        else:
            default = f"`{f.default!r}`"
        meaning = f.metadata["help"]
        if isinstance(f.default, bool):
            meaning += " A flag without a value; in the environment or a file: true/false."
        if isinstance(f.default, tuple):
            default = "(none)"
            meaning += f" The key in a file: `{f.name}`."
        modes = ", ".join(f.metadata["modes"])
        cells = [f"`{flag_of(f.name)}`", f"`{env_var(f.name)}`", default, modes, meaning]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n")
    return HEADER + "".join(rows)


def main() -> None:
    text = DOC.read_text()
    start = text.index(HEADER)
    end = text.index("\n\n", start)
    DOC.write_text(text[:start] + table() + text[end + 1:])


if __name__ == "__main__":
    main()
