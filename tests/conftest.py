"""Test fixtures: a real Postgres, never a mock.

The server is the one named by PG* / MATCHER_DATABASE_URL when given, else the project's
embedded PostgreSQL 18. Each test session works in a throwaway database of its own, dropped
at the end; each test gets its own connection.
"""
from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from matcher import config as config_mod
from matcher import db as db_mod

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def server() -> db_mod.Database:
    """The Postgres server under test, connected to its maintenance database."""
    if db_mod.uses_external_server():
        base = db_mod.resolve(ROOT).resolved()
        return base.with_dbname(os.environ.get("MATCHER_TEST_ADMIN_DB", "postgres"))
    socket_dir = db_mod.start_embedded(ROOT)
    return db_mod.Database(params={"host": str(socket_dir), "user": "postgres", "dbname": "postgres"}, embedded=True)


@contextmanager
def throwaway_database(server: db_mod.Database, prefix: str = "matcher_t"):
    """Create a database, yield it, drop it (even if the test failed)."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with server.connect(autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield server.with_dbname(name)
    finally:
        with server.connect(autocommit=True) as admin:
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def database(server: db_mod.Database):
    """A throwaway database shared by the tests of this session that need no slate of their own."""
    with throwaway_database(server, "matcher_session") as db:
        yield db


@pytest.fixture
def fresh_database(server: db_mod.Database):
    """A throwaway database for one test."""
    with throwaway_database(server) as db:
        yield db


@pytest.fixture(scope="session")
def dbt_target(tmp_path_factory) -> Path:
    """One dbt target folder per session, so dbt's partial parsing is reused between tests."""
    return tmp_path_factory.mktemp("dbt-target")


@pytest.fixture(scope="session")
def db_url(database: db_mod.Database) -> str:
    return make_conninfo(**database.resolved().params)


@pytest.fixture
def conn(database: db_mod.Database):
    with database.connect(autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="session")
def cfg() -> config_mod.Config:
    return config_mod.load(project=None)


def env_for(database: db_mod.Database, dbt_target: Path) -> dict[str, str | None]:
    """Environment that makes the CLI use `database` (None: unset; CliRunner's convention)."""
    env: dict[str, str | None] = {var: None for var in db_mod.LIBPQ_VARS}
    env["MATCHER_DATABASE_URL"] = make_conninfo(**database.resolved().params)
    env["MATCHER_DBT_TARGET_PATH"] = str(dbt_target)
    return env


def point_env_at(monkeypatch: pytest.MonkeyPatch, database: db_mod.Database, dbt_target: Path) -> None:
    for key, value in env_for(database, dbt_target).items():
        if value is not None:
            monkeypatch.setenv(key, value)
        else:
            monkeypatch.delenv(key, raising=False)


def subprocess_env(database: db_mod.Database, dbt_target: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in env_for(database, dbt_target).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def call_without_waiting(call: Callable, release: Callable[[], None], timeout: float = 120) -> tuple[list, bool]:
    """`call()` in a thread, given `timeout` seconds: a call that waited for another session's
    lock would wait for ever, so if it is still running then, `release()` (that session lets its
    lock go) and wait for it. Returns ([its result] if it returned, whether it had to wait)."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    thread.join(timeout)
    waited = thread.is_alive()
    if waited:
        release()
        thread.join()
    return result, waited
