"""Least privilege: each role is refused what it must not do, and can do its job.

One database runs the demo pipeline as the superuser, then `matcher roles` hands the schemas
over. Refusals are checked with `SET LOCAL ROLE` from the superuser connection (a rolled-back
transaction per statement); the happy paths connect as the LOGIN users `roles` creates.

Roles are cluster-wide and other test sessions may share the server, so the group roles get
a prefix unique to this session and are dropped at the end.
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import dataclass

import psycopg
import pytest
from click.testing import CliRunner
from conftest import ROOT, env_for, subprocess_env, throwaway_database
from psycopg import sql
from psycopg.conninfo import make_conninfo

from matcher import demo
from matcher import roles as roles_mod
from matcher.cli import cli
from matcher.db import Database
from matcher.migrate import migrate

pytestmark = pytest.mark.slow

LEADS = 300
ROLE_PREFIX = f"t{uuid.uuid4().hex[:8]}"
LOGIN_PREFIX = f"{ROLE_PREFIX}_u"
NAMES = roles_mod.RoleNames.for_prefix(ROLE_PREFIX)
LOGINS = {suffix: f"{LOGIN_PREFIX}_{suffix}" for suffix in ("dbt", "matcher", "ops")}
# passwords for the LOGIN users (needed where the server checks them; ignored under trust)
SECRETS = {suffix: f"pw-{uuid.uuid4().hex}" for suffix in LOGINS}
PASSWORD_VARS = {"dbt": "MATCHER_DBT_PASSWORD", "matcher": "MATCHER_MATCHER_PASSWORD", "ops": "MATCHER_OPS_PASSWORD"}


def matcher(env, *args):
    return subprocess.run([sys.executable, "-m", "matcher", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def roles_cli(env, passwords: dict[str, str | None]):
    """`matcher roles --login-prefix ...` through the CLI, with this session's role prefix."""
    real = roles_mod.apply_roles

    def with_prefix(conn, config, *, login_prefix=None):
        return real(conn, config, login_prefix=login_prefix, role_prefix=ROLE_PREFIX)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(roles_mod, "apply_roles", with_prefix)
        return CliRunner().invoke(cli, ["roles", "--login-prefix", LOGIN_PREFIX],
                                  env={**env, **{PASSWORD_VARS[k]: v for k, v in passwords.items()}})


def acl_state(c) -> dict:
    """Owners and grants of everything the roles touch (to prove a re-apply changes nothing)."""
    return {
        "schemas": c.execute("select nspname, nspowner::regrole::text, coalesce(nspacl::text, '')"
                             " from pg_namespace where nspname not like 'pg\\_%' order by 1").fetchall(),
        "relations": c.execute("select n.nspname, c.relname, c.relowner::regrole::text, coalesce(c.relacl::text, '')"
                               " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                               " where n.nspname in ('raw', 'canon', 'staging', 'intermediate', 'identity', 'ops')"
                               " and c.relkind in ('r', 'v', 'm', 'S') order by 1, 2").fetchall(),
        "defaults": c.execute("select defaclrole::regrole::text, defaclnamespace::regnamespace::text,"
                              " defaclobjtype, defaclacl::text from pg_default_acl order by 1, 2, 3").fetchall(),
        "database": c.execute("select datacl::text from pg_database where datname = current_database()").fetchone(),
        "members": c.execute("select roleid::regrole::text, member::regrole::text from pg_auth_members"
                             " where member::regrole::text like %s order by 1, 2", (f"{ROLE_PREFIX}%",)).fetchall(),
    }


@dataclass
class World:
    db: Database
    env: dict
    first: object
    second: object
    before_second: dict
    after_second: dict
    hashes: tuple[dict, dict]

    def login_params(self, suffix: str) -> dict[str, str]:
        return {**self.db.resolved().params, "user": LOGINS[suffix], "password": SECRETS[suffix]}

    def login_env(self, suffix: str) -> dict[str, str]:
        return {**self.env, "MATCHER_DATABASE_URL": make_conninfo(**self.login_params(suffix))}

    def login_db(self, suffix: str) -> Database:
        return Database(params=self.login_params(suffix), embedded=False)


def password_hashes(c) -> dict[str, str | None]:
    return dict(c.execute("select rolname, rolpassword from pg_authid where rolname = any(%s)",
                          (list(LOGINS.values()),)).fetchall())


def _drop_roles(db) -> None:
    roles = [NAMES.builder, NAMES.writer, NAMES.reader, *LOGINS.values()]
    with db.connect(autocommit=True) as c:
        present = [r for (r,) in c.execute("select rolname from pg_roles where rolname = any(%s)", (roles,))]
        if not present:
            return
        # one role at a time: dropping several at once trips over default ACLs that name
        # two of them ("could not find tuple for default ACL")
        for role in present:
            c.execute(sql.SQL("drop owned by {} cascade").format(sql.Identifier(role)))
        c.execute(sql.SQL("drop role {}").format(sql.SQL(", ").join(sql.Identifier(r) for r in present)))


@pytest.fixture(scope="module")
def world(server, dbt_target):
    with throwaway_database(server, "matcher_roles") as db:
        try:
            with db.connect(autocommit=True) as c:
                migrate(c, "canon")
                demo.create_raw_schema(c, "raw")
                demo.generate(c, demo.DemoSpec(leads=LEADS, seed=11), "raw")
            env = subprocess_env(db, dbt_target)
            built = matcher(env, "dbt", "build", "--quiet")
            assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
            ran = matcher(env, "run")
            assert ran.returncode == 0, ran.stderr
            cli_env = env_for(db, dbt_target)
            first = roles_cli(cli_env, SECRETS)
            assert first.exit_code == 0, first.output + repr(first.exception)
            with db.connect(autocommit=True) as c:
                before, hashes_before = acl_state(c), password_hashes(c)
            # again; this time without the dbt user's password variable
            second = roles_cli(cli_env, {**SECRETS, "dbt": None})
            assert second.exit_code == 0, second.output + repr(second.exception)
            with db.connect(autocommit=True) as c:
                after, hashes_after = acl_state(c), password_hashes(c)
            yield World(db, env, first, second, before, after, (hashes_before, hashes_after))
        finally:
            _drop_roles(db)


@pytest.fixture
def su(world):
    with world.db.connect(autocommit=True) as c:
        yield c


class _Rollback(Exception):
    pass


def as_role(c, role: str, statement: str) -> list[tuple]:
    """Run one statement as `role` in a transaction that is always rolled back; return its rows."""
    rows: list[tuple] = []
    try:
        with c.transaction():
            c.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
            # a failed SET ROLE must not pass for a refusal
            assert c.execute("select current_user").fetchone()[0] == role
            cur = c.execute(statement)
            rows = cur.fetchall() if cur.description else []
            raise _Rollback
    except _Rollback:
        return rows


def refused(c, role: str, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_role(c, role, statement)


# ------------------------------------------------------------------ the roles command

def test_roles_command_reports_every_role_and_hides_passwords(world, su):
    out = " ".join(world.first.output.split())  # rich wraps long lines
    for name in (NAMES.builder, NAMES.writer, NAMES.reader, *LOGINS.values()):
        assert f"{name}: created" in out, out
    for var in PASSWORD_VARS.values():
        assert f"password set from {var}" in out
    for secret in SECRETS.values():
        assert secret not in world.first.output + world.second.output
    hashes, _ = world.hashes
    for login in LOGINS.values():
        # hashed on the client: the server never saw (nor logged) the clear text
        assert hashes[login].startswith("SCRAM-SHA-256$")
        assert not any(secret in hashes[login] for secret in SECRETS.values())
    flags = dict(su.execute("select rolname, rolcanlogin from pg_roles where rolname like %s", (f"{ROLE_PREFIX}%",)))
    assert flags == {NAMES.builder: False, NAMES.writer: False, NAMES.reader: False,
                     **{login: True for login in LOGINS.values()}}


def test_applying_twice_changes_nothing(world):
    out = " ".join(world.second.output.split())
    assert ": created" not in out and out.count(": exists") == 6
    assert world.after_second == world.before_second
    # a password variable left unset keeps the password; a set one replaces it (new salt)
    assert "password unchanged (MATCHER_DBT_PASSWORD not set)" in out
    before, after = world.hashes
    assert after[LOGINS["dbt"]] == before[LOGINS["dbt"]]
    assert after[LOGINS["ops"]] != before[LOGINS["ops"]]


def test_ownership_handed_over(su):
    owners = dict(su.execute(
        "select n.nspname || '.' || c.relname, c.relowner::regrole::text from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname in ('canon', 'staging', 'intermediate', 'identity', 'ops') and c.relkind in ('r', 'v')"
    ).fetchall())
    assert owners["canon.identity_links"] == NAMES.writer
    assert owners["identity.identity_candidates"] == NAMES.builder
    assert owners["ops.ops_kpi_red_backlog"] == NAMES.builder
    wrong = {rel: o for rel, o in owners.items()
             if o != (NAMES.writer if rel.startswith("canon.") else NAMES.builder)}
    assert not wrong
    schemas = dict(su.execute("select nspname, nspowner::regrole::text from pg_namespace"
                              " where nspname in ('canon', 'staging', 'intermediate', 'identity', 'ops')").fetchall())
    assert schemas == {"canon": NAMES.writer, "staging": NAMES.builder, "intermediate": NAMES.builder,
                       "identity": NAMES.builder, "ops": NAMES.builder}
    fn_owner, = su.execute("select proowner::regrole::text from pg_proc where proname = 'forbid_change'"
                           " and pronamespace = 'canon'::regnamespace").fetchone()
    assert fn_owner == NAMES.writer


def test_roles_refuses_a_user_that_cannot_create_roles(world, su):
    before = acl_state(su)
    result = roles_cli({**world.login_env("ops"), "COLUMNS": "400"}, {})
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "cannot create roles" in lines[0], result.output
    assert acl_state(su) == before


# ------------------------------------------------------------------ refusals

WRITER_REFUSED = [
    "select count(*) from raw.cabinet_leads",
    "select count(*) from raw.drivers",
    "insert into raw.cabinet_leads (lead_id) values ('x')",
    "select count(*) from staging.stg_raw__drivers",
    "select count(*) from intermediate.int_identity__records",
    "create table identity.x (id int)",
    "create view ops.x as select 1 as one",
    "create table staging.x (id int)",
    "create table intermediate.x (id int)",
    "drop table identity.identity_candidates",
    "delete from identity.identity_candidates",
    "alter table identity.identity_candidates add column y int",
]

READER_REFUSED = [
    "select count(*) from canon.identity_links",
    "select count(*) from canon.match_runs",
    "select count(*) from raw.cabinet_leads",
    "select count(*) from raw.drivers",
    "select count(*) from identity.identity_candidates",
    "select count(*) from staging.stg_raw__cabinet_leads",
    "insert into canon.match_overrides (decision, left_source_table, left_source_pk, right_source_table,"
    " right_source_pk, reason) values ('do_not_link', 'a', 'a', 'b', 'b', 'x')",
    "update canon.identity_origin set origin_tag = 'driver_direct'",
    "delete from canon.recovery_queue",
    "insert into raw.claims (claim_id) values ('x')",
    "create view ops.x as select 1 as one",
    "drop view ops.ops_kpi_red_backlog",
]

BUILDER_REFUSED = [
    "insert into canon.identity_links (source_table, source_pk) values ('drivers', 'x')",
    "insert into canon.match_runs (status) values ('running')",
    "update canon.identity_registry set created_at = now()",
    "update canon.identity_origin set origin_tag = 'driver_direct'",
    "delete from canon.match_attempts",
    "delete from canon.identity_links",
    "truncate canon.match_runs cascade",
    "drop table canon.identity_links cascade",
    "create table canon.x (id int)",
]


@pytest.mark.parametrize("statement", WRITER_REFUSED)
def test_matcher_writer_is_refused(su, statement):
    refused(su, NAMES.writer, statement)


@pytest.mark.parametrize("statement", READER_REFUSED)
def test_ops_reader_is_refused(su, statement):
    refused(su, NAMES.reader, statement)


@pytest.mark.parametrize("statement", BUILDER_REFUSED)
def test_dbt_builder_is_refused(su, statement):
    refused(su, NAMES.builder, statement)


def test_each_role_can_read_what_its_job_needs(su):
    views = [v for (v,) in su.execute("select viewname from pg_views where schemaname = 'ops' order by 1")]
    assert len(views) >= 9
    for view in views:
        as_role(su, NAMES.reader, f"select count(*) from ops.{view}")
    for view in roles_mod.MATCHER_OPS_VIEWS:
        as_role(su, NAMES.writer, f"select count(*) from ops.{view}")
    for table in roles_mod.MATCHER_INPUT_TABLES:
        as_role(su, NAMES.writer, f"select count(*) from identity.{table}")
    assert as_role(su, NAMES.builder, "select count(*) from canon.identity_links")[0][0] > 0
    assert as_role(su, NAMES.builder, "select count(*) from raw.cabinet_leads")[0][0] > 0


def test_a_raw_table_created_later_is_readable_by_the_builder_only(su):
    su.execute("create table raw.new_channel (lead_id text, phone text)")
    try:
        su.execute("insert into raw.new_channel values ('X1', '987654321')")
        assert as_role(su, NAMES.builder, "select count(*) from raw.new_channel") == [(1,)]
        refused(su, NAMES.writer, "select count(*) from raw.new_channel")
        refused(su, NAMES.reader, "select count(*) from raw.new_channel")
        refused(su, NAMES.builder, "insert into raw.new_channel values ('X2', null)")
    finally:
        su.execute("drop table raw.new_channel")


# ------------------------------------------------------------------ happy paths as LOGIN users

def test_builder_builds_and_writer_runs_as_login_users(world, su):
    # new leads arrive, in a raw table the builder was granted before they existed
    demo.append_leads(su, 40, seed=12, schema="raw")
    built = matcher(world.login_env("dbt"), "dbt", "build", "--quiet")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    # relations the build recreated belong to the group role and kept their readers
    owners = set(r for (r,) in su.execute(
        "select distinct c.relowner::regrole::text from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname in ('staging', 'intermediate', 'identity', 'ops') and c.relkind in ('r', 'v')"))
    assert owners == {NAMES.builder}

    ran = matcher(world.login_env("matcher"), "run", "--json")
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["processed"] >= 40 and result["matched"] > 0
    last = su.execute("select status, command from canon.match_runs order by run_id desc limit 1").fetchone()
    assert last == ("succeeded", "run")
    # the run synced the recovery queue with the backlog: it read the two ops views as the writer
    queue = su.execute("select source_table, source_pk from canon.recovery_queue"
                       " where status in ('pending', 'failed') order by 1, 2").fetchall()
    backlog = su.execute("select lead_source_table, lead_source_pk from ops.ops_kpi_red_backlog order by 1, 2").fetchall()
    assert queue == backlog

    status = matcher(world.login_env("ops"), "status", "--json")
    assert status.returncode == 0, status.stderr
    panel = json.loads(status.stdout)
    assert panel["gap"] and panel["health"]["last_run_status"] == "succeeded"

    # still refused after the rebuild: default privileges gave nothing more than before
    refused(su, NAMES.writer, "select count(*) from intermediate.int_identity__records")
    refused(su, NAMES.writer, "create table identity.y (id int)")
    refused(su, NAMES.reader, "select count(*) from identity.identity_candidates")
    refused(su, NAMES.builder, "delete from canon.identity_links")
    # and the login users themselves are refused too (what they create, they create as the group)
    # (SET ROLE is checked against the session user: only a real login can show it refused)
    for login, forbidden in (("matcher", ["select count(*) from raw.drivers", f'set role "{NAMES.builder}"']),
                             ("ops", ["select count(*) from canon.identity_links", f'set role "{NAMES.writer}"']),
                             ("dbt", ["delete from canon.identity_links", f'set role "{NAMES.writer}"'])):
        with world.login_db(login).connect(autocommit=True) as c:
            assert c.execute("select current_user").fetchone()[0] == getattr(
                NAMES, {"matcher": "writer", "ops": "reader", "dbt": "builder"}[login])
            for statement in forbidden:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(statement)
