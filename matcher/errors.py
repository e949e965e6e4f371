"""Errors the CLI turns into one clear line and a distinct exit code (docs/architecture.md)."""
from __future__ import annotations


class MatcherError(Exception):
    """An expected failure: its message is safe to show (no raw personal data)."""

    exit_code = 1


class ConfigError(MatcherError):
    exit_code = 3


class DatabaseUnavailable(MatcherError):
    exit_code = 4


class RawTablesMissing(MatcherError):
    exit_code = 5


class CandidateContractError(MatcherError):
    exit_code = 6


class RunLocked(MatcherError):
    exit_code = 7


class DbtFailed(MatcherError):
    exit_code = 8


class DataError(MatcherError):
    exit_code = 9
