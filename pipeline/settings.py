"""Reading settings with their names: every bad value is reported as ``key: what was expected``.

Hydra composes the configuration; this module checks what the stages read from it, and
checks command-line overrides before Hydra sees them, so that a typo gets a one-line
answer with the closest valid key instead of a stack of Hydra internals.
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from pipeline.errors import PipelineError, fail
from pipeline.rules import Bound

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
#: What ``OmegaConf.select`` returns for a key that is not there (None is a value).
MISSING_KEY = object()
# Hydra's own flags that take a value, so that the value is not read as an override.
_FLAGS_WITH_VALUE = {
    "--cfg", "-c", "--info", "-i", "--package", "-p", "--config-path", "-cp",
    "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun",
}  # fmt: skip


def _value(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, throw_on_missing=False, default=None)
    if value is None:
        raise PipelineError(f"{key}: missing; set it in conf/ or on the command line ({key}=...)")
    return value


def read_number(
    cfg: DictConfig,
    key: str,
    rule: Bound | None = None,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    integer: bool = False,
) -> float:
    """The finite number at ``key`` that keeps ``rule`` (or the bounds given here)."""
    value = _value(cfg, key)
    problem = (rule or Bound(above, at_least, below, integer)).problem(value)
    if problem:
        raise PipelineError(f"{key}: {problem}")
    return float(value)


def read_flag(cfg: DictConfig, key: str) -> bool:
    """The true or false at ``key``."""
    value = OmegaConf.select(cfg, key, default=None)
    if not isinstance(value, bool):
        raise PipelineError(f"{key}: expected true or false, got {value!r}")
    return value


def read_names(cfg: DictConfig, key: str, *, allow_empty: bool = False) -> list[str]:
    """A list of column names at ``key`` (a single name is taken as a list of one)."""
    value = _value(cfg, key)
    names = list(value) if isinstance(value, ListConfig | list) else [value]
    if (not names and not allow_empty) or not all(isinstance(name, str) and name for name in names):
        raise PipelineError(f"{key}: expected a list of column names, got {value!r}")
    repeated = sorted({str(name) for name in names if names.count(name) > 1})
    if repeated:
        raise PipelineError(f"{key}: {', '.join(map(repr, repeated))} listed more than once")
    return [str(name) for name in names]


_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def read_model_name(cfg: DictConfig, key: str = "data.model_name") -> str:
    """A registered model's name: letters, digits, ``_``, ``.`` and ``-``; no spaces or slashes."""
    value = _value(cfg, key)
    if not isinstance(value, str) or not _MODEL_NAME.fullmatch(value):
        wanted = "a model name of letters, digits, '_', '.' and '-' (e.g. house-price)"
        raise PipelineError(f"{key}: expected {wanted}, got {value!r}")
    return value


def read_choice(cfg: DictConfig, key: str, choices: tuple[str, ...]) -> str:
    value = _value(cfg, key)
    if value not in choices:
        raise PipelineError(
            f"{key}: expected one of {', '.join(choices)}; got {value!r}{_did_you_mean(str(value), choices)}"
        )
    return str(value)


def _did_you_mean(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _known_keys(node: Any, prefix: str = "") -> set[str]:
    """Every dotted key of a plain (container) config tree."""
    keys = set()
    if isinstance(node, dict):
        for key, child in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            keys |= {path} | _known_keys(child, path)
    return keys


def _choices(override: Any) -> list[str]:
    """The values of an override: one, or each of a sweep's."""
    if override.is_sweep_override():
        try:
            return [str(value) for value in override.sweep_string_iterator()]
        except Exception:  # a range or interval of choices: nothing to list
            return []
    value = override.value()
    return [str(item) for item in value] if isinstance(value, list) else [str(value)]


def override_problem(arguments: list[str], config_name: str) -> str | None:
    """What is wrong with the command-line overrides, or None.

    Unknown keys get the closest known one; a config-group choice that does not exist
    gets the list of choices. Keys are known if the config composed with any of the
    group choices on the same command line has them (``optimizer=sgd
    optimizer.batch_size=256``; for a swept group, the union over its choices). Added
    keys (``+key=value``) are checked too: a new key that is not known is most often a
    typo. Forced keys (``++key``) and Hydra's own (``hydra.*``, ``hydra/...``) are left
    to Hydra.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    words, skip_next = [], False
    for argument in arguments:
        if skip_next:
            skip_next = False
        elif argument.startswith("-"):
            skip_next = argument in _FLAGS_WITH_VALUE
        else:
            words.append(argument)
    try:
        overrides = OverridesParser.create().parse_overrides(words)
    except HydraException:
        return None  # a syntax error: Hydra's own message says where
    groups = {path.name for path in CONF_DIR.iterdir() if path.is_dir()}
    ours = [
        override
        for override in overrides
        if not override.is_force_add() and override.key_or_group.split(".")[0].split("/")[0] != "hydra"
    ]
    selections: list[list[str]] = [[]]  # the default config, then one per group choice named
    for override in ours:
        key = override.key_or_group
        if key not in groups or override.is_delete():
            continue
        options = sorted(path.stem for path in (CONF_DIR / key).glob("*.yaml"))
        for choice in _choices(override):
            if choice not in options:
                return f"{key}={choice}: no such {key} config; the choices are: {', '.join(options)}"
            selections.append([f"{key}={choice}", f"+{key}={choice}"])  # in the defaults, or added
    # Settings named (a group's choice was checked above): known if some composed config has them.
    keys = {
        override.key_or_group
        for override in ours
        if override.key_or_group not in groups or override.is_delete()
    }
    known: set[str] = set()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        for selection in selections:
            if keys <= known:  # all found: the other choices' configs (0.1 s each) change nothing
                break
            for attempt in [selection[i : i + 1] for i in range(len(selection))] or [[]]:
                try:
                    composed = compose(config_name=config_name, overrides=attempt)
                except HydraException:
                    continue
                known |= _known_keys(OmegaConf.to_container(composed, resolve=False))
                break
    for key in (override.key_or_group for override in ours):
        if key in keys and key not in known:
            return f"unknown setting {key!r}{_suggestion(key, known, config_name, groups)}"
    return None


#: Names other libraries give settings of the project's (the last part of a key):
#: ``optimizer.momentum`` is ``optimizer.beta`` here, Adam's ``beta1`` is ``b1``.
ALIASES = {
    "momentum": "beta",
    "beta1": "b1",
    "beta2": "b2",
    "learning_rate": "lr",
    "step_size": "lr",
    "epochs": "max_iter",
    "iterations": "max_iter",
    "tolerance": "tol",
}


def _suggestion(key: str, known: set[str], config_name: str, groups: set[str]) -> str:
    """``; did you mean …?`` for an unknown key: its usual name's counterpart here, in
    this config or in another choice of its group (``optimizer.beta`` is momentum's),
    else the closest known key."""
    from hydra import compose, initialize_config_dir

    head, _, last = key.rpartition(".")
    wanted = f"{head}.{ALIASES[last]}" if head and last in ALIASES else key
    if wanted != key and wanted in known:
        return f"; did you mean {wanted!r}?"
    group = key.split(".")[0]
    if group in groups:  # a key of another choice of the group: say which choices have it
        having = []
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            for path in sorted((CONF_DIR / group).glob("*.yaml")):
                composed = compose(config_name=config_name, overrides=[f"{group}={path.stem}"])
                if OmegaConf.select(composed, wanted, default=MISSING_KEY) is not MISSING_KEY:
                    having.append(f"{group}={path.stem}")
        if having and wanted == key:
            return f"; it is a setting of {' and '.join(having)}"
        if having:
            return f"; did you mean {wanted!r} (with {' or '.join(having)})?"
    return _did_you_mean(key, known)


def check_overrides(config_name: str) -> None:
    """Exit with one line if ``sys.argv`` names a setting that does not exist."""
    problem = override_problem(sys.argv[1:], config_name)
    if problem:
        fail(problem)


def optimizer_file(name: str) -> dict[str, Any]:
    """The settings ``conf/optimizer/<name>.yaml`` gives (its ``defaults`` chain merged in),
    as a plain mapping: what ``optimizer=<name>`` starts from."""
    own = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "optimizer" / f"{name}.yaml"))
    assert isinstance(own, dict)
    merged: dict[str, Any] = {}
    for parent in own.pop("defaults", []):
        if parent != "_self_":
            merged |= optimizer_file(str(parent))
    return merged | {str(key): value for key, value in own.items()}
