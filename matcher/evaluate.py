"""Match quality against labelled data: pairwise precision, recall, F1 and blocking recall.

The labels are any table shaped `(source_table, source_pk, true_entity_id)`; the demo generator
writes `raw.ground_truth`. A record without a link counts as its own singleton cluster.
Pairwise: every unordered pair of records in the same true entity is a true pair; every pair
in the same person is a predicted pair. Blocking recall: the share of true pairs that reached
the candidate table (shared a blocking key within its block bound); reported also over the
*comparable* true pairs, those whose two records both carry something to compare (a usable
identifier, a name, or a claim attribution in `identity_records`; a driver always has one, its
own id): a record with nothing usable can reach no
candidate pair, whatever the blocking, so those pairs cap the first figure, not the second.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import psycopg
from psycopg import sql

from matcher.errors import MatcherError

# the record uid of a labelled row (same expression as macros/record_uid.sql)
UID_SQL = "('x' || left(md5(source_table || ':' || source_pk), 16))::bit(64)::bigint"


@dataclass
class Quality:
    records: int
    true_pairs: int
    predicted_pairs: int
    true_positive_pairs: int
    blocked_true_pairs: int | None
    precision: float
    recall: float
    f1: float
    blocking_recall: float | None
    # true pairs whose two records both carry a usable identifier or a name, and its recall
    comparable_true_pairs: int | None
    blocking_recall_comparable: float | None
    by_source: list[dict]
    by_source_pair: list[dict]
    by_rule: list[dict]

    def as_dict(self) -> dict:
        return asdict(self)


def _ratio(a: int, b: int) -> float:
    return a / b if b else 1.0


def parse_table(name: str) -> sql.Composable:
    parts = name.split(".")
    if len(parts) not in (1, 2) or not all(parts):
        raise MatcherError(f"labels table must be 'schema.table' or 'table', got {name!r}")
    return sql.Identifier(*parts)


def evaluate(
    conn: psycopg.Connection,
    *,
    labels: str,
    canon_schema: str = "canon",
    identity_schema: str = "identity",
    with_blocking: bool = True,
) -> Quality:
    exists = conn.execute("select to_regclass(%s)", (labels,)).fetchone()[0]
    if exists is None:
        raise MatcherError(f"labels table {labels} does not exist")
    ids = {"labels": parse_table(labels), "canon": sql.Identifier(canon_schema), "ident": sql.Identifier(identity_schema)}
    conn.execute("drop table if exists pg_temp.eval_records")
    conn.execute(
        sql.SQL(
            "create temp table eval_records as"
            " select t.source_table, t.source_pk, t.true_entity_id,"
            " coalesce(l.person_key::text, 'unlinked:' || t.source_table || ':' || t.source_pk) as cluster,"
            " l.match_rule"
            " from {labels} t left join {canon}.identity_links l on l.source_table = t.source_table"
            " and md5(l.source_pk) = md5(t.source_pk) and l.source_pk = t.source_pk"
        ).format(**ids)
    )
    # statistics for the joins below (by rule: unanalyzed, the table is planned as a few rows and
    # the per-cluster join runs as a nested loop, minutes at 50k records)
    conn.execute("analyze eval_records")
    pairs = "sum(n * (n - 1) / 2)::bigint"
    records = conn.execute("select count(*) from eval_records").fetchone()[0]
    true_pairs = conn.execute(f"select coalesce({pairs}, 0) from (select count(*) n from eval_records group by true_entity_id) s").fetchone()[0]
    predicted = conn.execute(f"select coalesce({pairs}, 0) from (select count(*) n from eval_records group by cluster) s").fetchone()[0]
    tp = conn.execute(f"select coalesce({pairs}, 0) from (select count(*) n from eval_records group by cluster, true_entity_id) s").fetchone()[0]

    blocked = comparable = None
    blocked_by_pair: dict[tuple[str, str], int] = {}
    if with_blocking:
        candidates = f"{identity_schema}.identity_candidates"
        records_view = f"{identity_schema}.identity_records"
        if conn.execute("select to_regclass(%s), to_regclass(%s)", (candidates, records_view)).fetchone()[1]:
            conn.execute("drop table if exists pg_temp.eval_uids")
            conn.execute(
                sql.SQL(
                    "create temp table eval_uids as select e.record_uid, e.source_table, e.true_entity_id,"
                    " coalesce(r.phone, r.document_number, r.email, r.plate, r.full_name, r.claim_driver_id) is not null"
                    " as comparable"
                    " from (select " + UID_SQL + " as record_uid, source_table, true_entity_id from eval_records) e"
                    " left join {ident}.identity_records r on r.record_uid = e.record_uid"
                ).format(**ids)
            )
            conn.execute("create index on eval_uids (record_uid)")
            conn.execute("analyze eval_uids")
            comparable = conn.execute(
                f"select coalesce({pairs}, 0) from (select count(*) n from eval_uids where comparable"
                " group by true_entity_id) s"
            ).fetchone()[0]
            # true pairs present in the candidate table (the matcher could only link those directly)
            for s1, s2, n in conn.execute(
                sql.SQL(
                    "select least(a.source_table, b.source_table), greatest(a.source_table, b.source_table),"
                    " count(*) from {ident}.identity_candidates c"
                    " join eval_uids a on a.record_uid = c.left_uid join eval_uids b on b.record_uid = c.right_uid"
                    " where a.true_entity_id = b.true_entity_id group by 1, 2"
                ).format(**ids)
            ).fetchall():
                blocked_by_pair[(s1, s2)] = n
            blocked = sum(blocked_by_pair.values())

    by_source = [
        {"source_table": st, "records": n, "linked": linked, "linked_share": round(_ratio(linked, n), 4)}
        for st, n, linked in conn.execute(
            "select source_table, count(*), count(*) filter (where cluster not like 'unlinked:%%')"
            " from eval_records group by 1 order by 1"
        ).fetchall()
    ]
    # pairwise precision and recall per pair of sources (e.g. cabinet_leads x drivers)
    by_pair = []
    for s1, s2, t_pairs, p_pairs, tp_pairs in conn.execute(
        "with t as (select least(a.source_table, b.source_table) s1, greatest(a.source_table, b.source_table) s2,"
        "   a.cluster = b.cluster as found from eval_records a join eval_records b"
        "   on a.true_entity_id = b.true_entity_id and (a.source_table, a.source_pk) < (b.source_table, b.source_pk)),"
        " p as (select least(a.source_table, b.source_table) s1, greatest(a.source_table, b.source_table) s2,"
        "   a.true_entity_id = b.true_entity_id as right_pair from eval_records a join eval_records b"
        "   on a.cluster = b.cluster and a.cluster not like 'unlinked:%%'"
        "   and (a.source_table, a.source_pk) < (b.source_table, b.source_pk))"
        " select coalesce(t.s1, p.s1), coalesce(t.s2, p.s2), coalesce(t.n, 0), coalesce(p.n, 0), coalesce(p.tp, 0)"
        " from (select s1, s2, count(*) n from t group by 1, 2) t"
        " full join (select s1, s2, count(*) n, count(*) filter (where right_pair) tp from p group by 1, 2) p"
        "   using (s1, s2) order by 1, 2"
    ).fetchall():
        row = {"sources": f"{s1} x {s2}", "true_pairs": t_pairs, "predicted_pairs": p_pairs,
               "precision": round(_ratio(tp_pairs, p_pairs), 4), "recall": round(_ratio(tp_pairs, t_pairs), 4)}
        if blocked is not None:
            row["blocked_true_pairs"] = blocked_by_pair.get((s1, s2), 0)
            row["blocking_recall"] = round(_ratio(row["blocked_true_pairs"], t_pairs), 4)
        by_pair.append(row)
    # per rule: share of links whose record belongs to the true entity most of its person's records belong to
    by_rule = [
        {"rule": rule, "links": n, "correct": ok, "link_precision": round(_ratio(ok, n), 4)}
        for rule, n, ok in conn.execute(
            sql.SQL(
                # (the rule is taken with the person when eval_records is made: joined again here,
                # the three-column join is estimated at one row and the rest planned as a nested loop)
                "with e as (select * from eval_records where match_rule is not null),"
                " modal as (select cluster, true_entity_id, row_number() over (partition by cluster"
                "   order by count(*) desc, true_entity_id) as rn from e group by cluster, true_entity_id)"
                " select e.match_rule, count(*), count(*) filter (where m.true_entity_id = e.true_entity_id)"
                " from e join modal m on m.cluster = e.cluster and m.rn = 1 group by 1 order by 2 desc"
            ).format(**ids)
        ).fetchall()
    ]
    precision, recall = _ratio(tp, predicted), _ratio(tp, true_pairs)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Quality(
        records=records, true_pairs=true_pairs, predicted_pairs=predicted, true_positive_pairs=tp,
        blocked_true_pairs=blocked, precision=precision, recall=recall, f1=f1,
        blocking_recall=_ratio(blocked, true_pairs) if blocked is not None else None,
        comparable_true_pairs=comparable,
        # a blocked true pair is comparable by construction (both records carry a key)
        blocking_recall_comparable=_ratio(blocked, comparable) if blocked is not None else None,
        by_source=by_source,
        by_source_pair=by_pair, by_rule=by_rule,
    )
