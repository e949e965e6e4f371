"""Masked forms of personal data, for anything a person reads (CLI output, logs, errors)."""
from __future__ import annotations


def mask_identifier(value: str | None, keep: int = 2) -> str | None:
    """'987654321' -> '98*****21': enough to tell two values apart, not enough to use one."""
    if value is None:
        return None
    if len(value) <= 2 * keep:
        return "*" * len(value)
    return value[:keep] + "*" * (len(value) - 2 * keep) + value[-keep:]


def mask_email(value: str | None) -> str | None:
    if value is None:
        return None
    local, _, domain = value.partition("@")
    return (local[:1] + "***") + ("@" + domain if domain else "")


def mask_name(value: str | None) -> str | None:
    """'juan carlos quispe' -> 'j*** c***** q*****'."""
    if value is None:
        return None
    return " ".join(tok[:1] + "*" * (len(tok) - 1) for tok in value.split())
