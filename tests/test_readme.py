"""The README's tour is what a new user runs first: it must name the quickstart's study and real commands."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from automtd.cli.main import COMMANDS

REPO = Path(__file__).resolve().parents[1]


def _tour() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## A tour of the command line")
    block = text.index("```bash", start)
    return text[block + len("```bash") : text.index("```", block + 7)]


def test_the_tour_uses_the_study_the_quickstart_creates() -> None:
    config = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    name = config["study"]["name"]
    storage = config["study"]["storage"].replace("{name}", name)
    tour = _tour()
    assert f"--study {name} --storage {storage}" in tour
    assert "configs/quickstart.yaml" in (REPO / "scripts" / "quickstart.sh").read_text()


def test_the_tour_puts_automtd_on_the_path_and_runs_only_real_commands() -> None:
    tour = _tour()
    assert "source .venv/bin/activate" in tour
    used = set(re.findall(r"^automtd ([a-z-]+)", tour, flags=re.MULTILINE))
    assert used and used <= set(COMMANDS), used - set(COMMANDS)
    assert "[" not in "".join(line.split("#")[0] for line in tour.splitlines())  # no optional-argument brackets
