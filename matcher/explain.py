"""Explain one record: its normalized identifiers (masked), its candidates with field levels and
scores, the rule that fired or the fail reason, and the person and origin it ended with."""
from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from matcher import scoring
from matcher.config import FIELDS, LEVELS, Config
from matcher.errors import MatcherError
from matcher.masking import mask_email, mask_identifier, mask_name

RECORD_COLUMNS = ("u.record_uid, u.source_table, u.source_pk, u.record_kind, u.event_at, r.phone, r.document_number,"
                  " r.email, r.plate, r.claim_driver_id, r.full_name, r.name_frequency")

# Mirror of macros/blocking_key_types.sql: bit (code - 1) of identity_candidates.blocking_mask.
BLOCKING_KEY_TYPES = ("phone", "document", "email", "plate", "phone_fuzzy", "document_fuzzy", "name_pair", "name_full", "name_triple", "plate_fuzzy", "claim")


def blocking_keys(mask: int) -> list[str]:
    """The key types a candidate pair shares, from its blocking_mask."""
    return [name for bit, name in enumerate(BLOCKING_KEY_TYPES) if mask >> bit & 1]


def _masked(rec: dict) -> dict:
    return {
        "phone": mask_identifier(rec["phone"]), "document_number": mask_identifier(rec["document_number"]),
        "email": mask_email(rec["email"]), "plate": mask_identifier(rec["plate"], 1),
        "full_name": mask_name(rec["full_name"]),
        # a driver id (the platform's key, not personal data): the driver claims name a lead for
        "claim_driver_id": rec["claim_driver_id"],
    }


def explain(conn: psycopg.Connection, cfg: Config, source_table: str, source_pk: str) -> dict:
    canon, ident = sql.Identifier(cfg.canon_schema), sql.Identifier(cfg.identity_schema)
    with conn.cursor(row_factory=dict_row) as cur:
        rec = cur.execute(
            sql.SQL("select " + RECORD_COLUMNS + " from intermediate.int_identity__records_usable u"
                    " join {}.identity_records r using (record_uid)"
                    " where u.source_table = %s and u.source_pk = %s and not u.is_deleted").format(ident),
            (source_table, source_pk),
        ).fetchone()
        if rec is None:
            raise MatcherError(f"no record {source_table}/{source_pk} in the built records (run dbt build?)")
        link = cur.execute(
            sql.SQL("select person_key::text, match_rule, match_score, confidence, evidence, run_id, linked_at"
                    " from {}.identity_links where record_uid = %s").format(canon), (rec["record_uid"],)
        ).fetchone()
        origin = None
        if link:
            origin = cur.execute(
                sql.SQL("select origin_tag, origin_source_table, origin_source_pk, origin_at, origin_rule"
                        " from {}.identity_origin where person_key = %s::uuid").format(canon), (link["person_key"],)
            ).fetchone()
        attempts = cur.execute(
            sql.SQL("select run_id, outcome, fail_reason, best_score, match_rule, attempted_at from {}.match_attempts"
                    " where record_uid = %s order by attempted_at desc limit 5").format(canon),
            (rec["record_uid"],),
        ).fetchall()
        conflicts = cur.execute(
            sql.SQL("select run_id, conflict_kind, component_size, person_keys::text[] as person_keys"
                    " from {}.match_conflicts where source_table = %s and source_pk = %s order by run_id desc limit 3"
                    ).format(canon), (source_table, source_pk),
        ).fetchall()
        others = cur.execute(
            sql.SQL(
                "select c.blocking_mask, o.record_uid, u.source_table, u.source_pk, o.phone, o.document_number,"
                " o.email, o.plate, o.claim_driver_id, o.full_name, greatest(coalesce(o.name_frequency, 0), %(freq)s) as freq,"
                " l.person_key::text as person_key"
                " from {ident}.identity_candidates c"
                " join {ident}.identity_records o"
                "   on o.record_uid = case when c.left_uid = %(uid)s then c.right_uid else c.left_uid end"
                " join intermediate.int_identity__records_usable u on u.record_uid = o.record_uid"
                " left join {canon}.identity_links l on l.record_uid = o.record_uid"
                " where c.left_uid = %(uid)s or c.right_uid = %(uid)s"
            ).format(ident=ident, canon=canon),
            {"uid": rec["record_uid"], "freq": rec["name_frequency"] or 0},
        ).fetchall()
    candidates = []
    if others:
        n = len(others)
        pairs = scoring.PairColumns.from_lists(
            l_phone=[rec["phone"]] * n, r_phone=[o["phone"] for o in others],
            l_document=[rec["document_number"]] * n, r_document=[o["document_number"] for o in others],
            l_email=[rec["email"]] * n, r_email=[o["email"] for o in others],
            l_plate=[rec["plate"]] * n, r_plate=[o["plate"] for o in others],
            l_name=[rec["full_name"]] * n, r_name=[o["full_name"] for o in others],
            l_claim=[rec["claim_driver_id"]] * n, r_claim=[o["claim_driver_id"] for o in others],
            name_frequency=[o["freq"] for o in others],
        )
        s = scoring.score_pairs(pairs, cfg, prune=False)  # show every field, even when moot
        for i, o in enumerate(others):
            candidates.append({
                "source_table": o["source_table"], "source_pk": o["source_pk"], "person_key": o["person_key"],
                "blocking_keys": blocking_keys(o["blocking_mask"]),
                "levels": {f: LEVELS[f][s.levels[f][i]] for f in FIELDS},
                "name_similarity": round(float(s.name_similarity[i]), 1),
                "score": round(float(s.score[i]), 2), "probability": round(float(s.probability[i]), 4),
                "rule": cfg.rules[s.rule[i]].name if s.rule[i] >= 0 else None,
                "identifiers": _masked(o),
            })
        candidates.sort(key=lambda c: -c["score"])
    return {
        "record": {"source_table": rec["source_table"], "source_pk": rec["source_pk"], "record_kind": rec["record_kind"],
                   "event_at": rec["event_at"].isoformat() if rec["event_at"] else None, "identifiers": _masked(rec)},
        "link": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in link.items()} if link else None,
        "origin": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in origin.items()} if origin else None,
        "attempts": [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in a.items()} for a in attempts],
        "conflicts": conflicts,
        "candidates": candidates,
    }
