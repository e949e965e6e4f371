"""Matcher configuration: packaged defaults (`defaults.toml`) merged with a user file.

The user file is `--config PATH`, else `$MATCHER_CONFIG`, else `<project>/matcher.toml` if it
exists. Every key is validated here, so a bad file fails before anything is written.
"""
from __future__ import annotations

import copy
import os
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from matcher.errors import ConfigError

# the name comes last (scoring sums the others first, then compares names only where they can matter)
FIELDS = ("phone", "document", "email", "plate", "claim", "name")
IDENTIFIER_FIELDS = ("phone", "document", "email")
LEVELS = {
    "phone": ("exact", "close", "near", "differ", "missing"),
    "document": ("exact", "close", "near", "differ", "missing"),
    "email": ("exact", "close", "near", "differ", "missing"),
    "plate": ("exact", "close", "near", "differ", "missing"),
    # the driver the platform's claims name a lead for (a driver: its own id): equal or not
    "claim": ("exact", "differ", "missing"),
    "name": ("exact", "strong", "fair", "weak", "differ", "missing"),
}
CONFIDENCES = ("high", "medium", "low")
SOURCE_TABLES = ("cabinet_leads", "scout_registrations", "fleet_migrations", "drivers")


@dataclass(frozen=True)
class Rule:
    name: str
    when: dict[str, frozenset[str]]
    min_score: float
    confidence: str
    min_exact_identifiers: int = 0
    min_identifier_agreements: int = 0
    max_name_frequency: int | None = None
    min_name_tokens: int = 0


@dataclass(frozen=True)
class Config:
    canon_schema: str
    identity_schema: str
    raw_schema: str
    batch_size: int
    read_batch_size: int
    score_processes: int
    max_component_size: int
    retry_after_hours: float
    max_attempts: int
    origin_source_priority: tuple[str, ...]
    singleton_person_kinds: tuple[str, ...]
    close_max_edits: int
    near_max_edits: int
    near_min_length: int
    name_token_match: float
    document_min_digits: int
    weights: dict[str, dict[str, float]]
    score_midpoint: float
    rules: tuple[Rule, ...]
    source: str

    def as_parameters(self) -> dict[str, Any]:
        """What a run records in match_runs.parameters."""
        return {
            "config": self.source,
            "batch_size": self.batch_size,
            "max_component_size": self.max_component_size,
            "retry_after_hours": self.retry_after_hours,
            "max_attempts": self.max_attempts,
            "rules": [r.name for r in self.rules],
        }


def _defaults() -> dict:
    return tomllib.loads(resources.files("matcher").joinpath("defaults.toml").read_text(encoding="utf-8"))


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _need(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"invalid configuration ({where}): {message}")


def _number(data: dict, key: str, where: str, *, minimum: float | None = None, integer: bool = False):
    value = data.get(key)
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    _need(ok and not isinstance(value, bool), f"{where}.{key}", f"expected a number, got {value!r}")
    if minimum is not None:
        _need(value >= minimum, f"{where}.{key}", f"must be >= {minimum}, got {value!r}")
    return value


def _parse_rule(i: int, raw: Any) -> Rule:
    where = f"rules[{i}]"
    _need(isinstance(raw, dict), where, "each rule is a table")
    unknown = set(raw) - {"name", "when", "min_score", "confidence", "min_exact_identifiers",
                          "min_identifier_agreements", "max_name_frequency", "min_name_tokens"}
    _need(not unknown, where, f"unknown keys {sorted(unknown)}")
    name = raw.get("name")
    _need(isinstance(name, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name or "") is not None,
          f"{where}.name", f"a rule name is lower-case letters, digits and underscores, got {name!r}")
    when_raw = raw.get("when", {})
    _need(isinstance(when_raw, dict), f"{where}.when", "expected a table of field = [levels]")
    when: dict[str, frozenset[str]] = {}
    for field, levels in when_raw.items():
        _need(field in LEVELS, f"{where}.when", f"unknown field {field!r} (fields: {', '.join(FIELDS)})")
        _need(isinstance(levels, list) and levels, f"{where}.when.{field}", "expected a non-empty list of levels")
        bad = [lv for lv in levels if lv not in LEVELS[field]]
        _need(not bad, f"{where}.when.{field}", f"unknown levels {bad} (allowed: {', '.join(LEVELS[field])})")
        when[field] = frozenset(levels)
    confidence = raw.get("confidence")
    _need(confidence in CONFIDENCES, f"{where}.confidence", f"expected one of {CONFIDENCES}, got {confidence!r}")
    min_exact = raw.get("min_exact_identifiers", 0)
    min_agree = raw.get("min_identifier_agreements", 0)
    for key, value in (("min_exact_identifiers", min_exact), ("min_identifier_agreements", min_agree)):
        _need(isinstance(value, int) and 0 <= value <= 3, f"{where}.{key}", "expected an integer 0..3")
    max_freq = raw.get("max_name_frequency")
    min_tokens = raw.get("min_name_tokens", 0)
    _need(max_freq is None or (isinstance(max_freq, int) and 2 <= max_freq <= 5), f"{where}.max_name_frequency",
          "expected an integer 2..5")
    _need(isinstance(min_tokens, int) and 0 <= min_tokens <= 5, f"{where}.min_name_tokens", "expected an integer 0..5")
    # No rule may accept on names and plates alone, unless the name is exact, rare (term
    # frequency), long, and no personal identifier disagrees.
    demands_identifier = min_exact > 0 or min_agree > 0 or any(
        f in when and "missing" not in when[f] and "differ" not in when[f] for f in IDENTIFIER_FIELDS
    )
    rare_name_only = (
        max_freq is not None and min_tokens >= 3 and when.get("name") == frozenset({"exact"})
        and all(f in when and "differ" not in when[f] for f in IDENTIFIER_FIELDS)
    )
    # ... or on the platform's own attribution (a claim that names the lead for that driver),
    # where no personal identifier may disagree and the names may not
    claim_named = when.get("claim") == frozenset({"exact"}) and all(
        f in when and "differ" not in when[f] for f in IDENTIFIER_FIELDS
    ) and "name" in when and not when["name"] & {"weak", "differ"}
    _need(demands_identifier or rare_name_only or claim_named, where,
          "a rule must require agreement on phone, document or email (or, for a name-only rule: name = [\"exact\"],"
          " max_name_frequency, min_name_tokens >= 3, and no identifier allowed to differ; or, for a claim rule:"
          " claim = [\"exact\"], no identifier allowed to differ, and name not allowed weak or differ)")
    return Rule(
        name=name.strip(),
        when=when,
        min_score=float(_number(raw, "min_score", where)),
        confidence=confidence,
        min_exact_identifiers=min_exact,
        min_identifier_agreements=min_agree,
        max_name_frequency=max_freq,
        min_name_tokens=min_tokens,
    )


def build(data: dict, source: str) -> Config:
    schemas, run, levels = data.get("schemas", {}), data.get("run", {}), data.get("levels", {})
    for key in ("canon", "identity", "raw"):
        value = schemas.get(key)
        _need(isinstance(value, str) and value.strip() != "", f"schemas.{key}", "expected a schema name")
    priority = run.get("origin_source_priority")
    _need(
        isinstance(priority, list) and sorted(priority) == sorted(SOURCE_TABLES),
        "run.origin_source_priority",
        f"expected each of {', '.join(SOURCE_TABLES)} exactly once",
    )
    singles = run.get("singleton_person_kinds", [])
    _need(isinstance(singles, list) and set(singles) <= {"lead", "driver"},
          "run.singleton_person_kinds", "expected a list of record kinds: lead, driver")
    weights_raw = data.get("weights", {})
    weights: dict[str, dict[str, float]] = {}
    for field in FIELDS:
        table = weights_raw.get(field)
        _need(isinstance(table, dict), f"weights.{field}", "missing")
        weights[field] = {"missing": 0.0}
        for level in LEVELS[field]:
            if level == "missing":
                continue
            weights[field][level] = float(_number(table, level, f"weights.{field}"))
    rules_raw = data.get("rules")
    _need(isinstance(rules_raw, list) and rules_raw, "rules", "at least one rule is required")
    rules = tuple(_parse_rule(i, r) for i, r in enumerate(rules_raw))
    names = [r.name for r in rules]
    _need(len(set(names)) == len(names), "rules", "rule names must be unique")
    token_match = _number(levels, "name_token_match", "levels", minimum=0.5)
    close_edits = _number(levels, "identifier_close_max_edits", "levels", minimum=1, integer=True)
    near_edits = _number(levels, "identifier_near_max_edits", "levels", minimum=1, integer=True)
    _need(near_edits >= close_edits, "levels.identifier_near_max_edits",
          f"must be >= identifier_close_max_edits ({close_edits}); equal to it turns the near level off")
    _need(token_match <= 1.0, "levels.name_token_match", "must be <= 1.0")
    return Config(
        canon_schema=os.environ.get("MATCHER_CANON_SCHEMA") or schemas["canon"],
        identity_schema=os.environ.get("MATCHER_IDENTITY_SCHEMA") or schemas["identity"],
        raw_schema=os.environ.get("MATCHER_RAW_SCHEMA") or schemas["raw"],
        batch_size=_number(run, "batch_size", "run", minimum=1, integer=True),
        read_batch_size=_number(run, "read_batch_size", "run", minimum=1000, integer=True),
        score_processes=_number(run, "score_processes", "run", minimum=0, integer=True),
        max_component_size=_number(run, "max_component_size", "run", minimum=2, integer=True),
        retry_after_hours=float(_number(run, "retry_after_hours", "run", minimum=0)),
        max_attempts=_number(run, "max_attempts", "run", minimum=1, integer=True),
        origin_source_priority=tuple(priority),
        singleton_person_kinds=tuple(singles),
        close_max_edits=close_edits,
        near_max_edits=near_edits,
        near_min_length=_number(levels, "identifier_near_min_length", "levels", minimum=1, integer=True),
        name_token_match=float(token_match),
        document_min_digits=_number(levels, "document_min_digits", "levels", minimum=1, integer=True),
        weights=weights,
        score_midpoint=float(_number(data.get("scoring", {}), "score_midpoint", "scoring")),
        rules=rules,
        source=source,
    )


def load(path: str | Path | None = None, project: Path | None = None) -> Config:
    """Defaults merged with the user's file (see module docstring)."""
    data = _defaults()
    source = "defaults"
    chosen = path or os.environ.get("MATCHER_CONFIG")
    if not chosen and project is not None and (project / "matcher.toml").exists():
        chosen = project / "matcher.toml"
    if chosen:
        chosen = Path(chosen)
        try:
            override = tomllib.loads(chosen.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file not found: {chosen}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {chosen} is not valid TOML: {exc}") from exc
        if "rules" in override:
            data.pop("rules")
        data = _merge(data, override)
        source = str(chosen)
    return build(data, source)
