"""The README and docs/ say what the code does: every command they show exists as shown.

Each fenced ``bash`` or ``sh`` block is read command by command. A block right after a
``<!-- run -->`` line is run, in the project, and must exit 0 (such blocks change no
file). The others are checked without running them: ``python -m pipeline.X`` names a
module whose options (``--out``) its ``--help`` lists and whose Hydra overrides
(``optimizer.lr=0.1``) are settings of its config; ``make X`` names a target.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache

import pytest

from pipeline.settings import override_problem
from tests.helpers import REPO_ROOT, user_env

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
#: Hydra entry points and the config each composes.
HYDRA = {"train": "train", "ingest": "config", "split": "config", "evaluate": "config", "store": "config"}


def blocks() -> list[tuple[str, str, bool]]:
    """(where, text, run?) of every shell block of the README and docs/."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            if match["lang"] not in ("bash", "sh"):
                continue
            before = text[: match.start()].rstrip().splitlines()
            run = bool(before) and before[-1].strip() == "<!-- run -->"
            line = text[: match.start()].count("\n") + 1
            body = "\n".join(row.removeprefix(match["indent"]) for row in match["body"].splitlines())
            found.append((f"{page.relative_to(REPO_ROOT)}:{line}", body, run))
    return found


def commands(block: str) -> list[list[str]]:
    """Each command of a block as words: continuation lines joined, comments dropped,
    split at ``|``, ``&&`` and ``;``."""
    joined = block.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in [*words, ";"]:
            if word in ("|", "&&", ";", "||"):
                if current:
                    found.append(current)
                current = []
            else:
                current.append(word)
    return found


@cache
def help_text(module: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", f"pipeline.{module}", "--help"],
        cwd=REPO_ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@cache
def make_targets() -> frozenset[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return frozenset(re.findall(r"^([a-z][\w-]*):", text, re.M))


def check_command(words: list[str]) -> None:
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VARIABLE=value before a command
        words = words[1:]
    if not words:
        return
    if words[0] == "make":
        assert set(words[1:]) <= make_targets(), words
    if words[0] not in ("python", "python3") or words[1:2] != ["-m"] or not words[2].startswith("pipeline."):
        return  # another program's command: theirs to document
    module = words[2].removeprefix("pipeline.")
    assert (REPO_ROOT / "pipeline" / f"{module}.py").is_file(), words
    arguments = words[3:]
    if module in HYDRA:
        overrides = [word for word in arguments if "=" in word and not word.startswith("-")]
        problem = override_problem(overrides, HYDRA[module])
        assert problem is None, (words, problem)
    else:
        for option in (word.split("=")[0] for word in arguments if word.startswith("--")):
            assert option in help_text(module), (words, option)


@pytest.mark.parametrize(("where", "block", "run"), blocks(), ids=[where for where, _, _ in blocks()])
def test_every_shown_command_exists_as_shown(where: str, block: str, run: bool) -> None:
    for words in commands(block):
        check_command(words)


RUN_BLOCKS = [(where, block) for where, block, run in blocks() if run]


@pytest.mark.e2e
@pytest.mark.parametrize(("where", "block"), RUN_BLOCKS, ids=[where for where, _ in RUN_BLOCKS])
def test_every_block_marked_run_runs(where: str, block: str) -> None:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=REPO_ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{where}:\n{done.stdout}\n{done.stderr}"


def test_some_blocks_are_run() -> None:
    assert RUN_BLOCKS


def test_every_module_is_in_the_layout_table() -> None:
    table = (REPO_ROOT / "docs" / "development.md").read_text()
    modules = sorted(path.name for path in (REPO_ROOT / "pipeline").glob("*.py") if path.stem != "__init__")
    missing = [name for name in modules if name not in table and name.removesuffix(".py") not in table]
    assert missing == []
