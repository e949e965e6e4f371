"""Scoring: the comparisons that real Latin-American person data needs, and their invariants."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matcher import config, scoring
from matcher.cluster import best_edge_per_node, connected_components

CFG = config.load()


def score_one(**fields):
    cols = {k: [fields.get(k, "")] for k in (
        "l_phone", "r_phone", "l_document", "r_document", "l_email", "r_email", "l_plate", "r_plate", "l_name", "r_name",
        "l_claim", "r_claim")}
    s = scoring.score_pairs(scoring.PairColumns.from_lists(**cols), CFG)
    levels = {f: scoring.LEVELS[f][s.levels[f][0]] for f in scoring.FIELDS}
    rule = CFG.rules[s.rule[0]].name if s.rule[0] >= 0 else None
    return levels, rule, float(s.score[0])


@pytest.mark.parametrize("left,right,level", [
    ("juan carlos quispe mamani", "quispe mamani juan carlos", "exact"),      # swapped given/family
    ("juan carlos quispe mamani", "juan carlos quispe", "strong"),            # missing second surname
    ("juan carlos quispe mamani", "j carlos quispe mamani", "strong"),        # initial
    ("maria del carmen rojas", "maria carmen rojas", "exact"),                # particles carry no identity
    ("jose luis nunez pena", "jose luis nunez pena", "exact"),
    ("jose luis nunez pena", "jose luis nunes pena", "strong"),               # one-letter typo
    ("juan quispe mamani", "maria quispe mamani", "fair"),                    # siblings share surnames
    ("juan quispe", "pedro rojas", "differ"),
    ("juan quispe", "", "missing"),
])
def test_name_levels(left, right, level):
    levels, _, _ = score_one(l_name=left, r_name=right)
    assert levels["name"] == level


@pytest.mark.parametrize("left,right,level", [
    ("12345678", "12345678", "exact"),
    ("12345678", "12345687", "close"),      # adjacent transposition is one edit
    ("12345678", "12345670", "close"),      # substitution
    ("Q12345678", "12345678", "exact"),     # licence = letter + DNI: same digits
    ("12345678", "12345699", "near"),       # two-character typo
    ("12345678", "21345679", "near"),       # a transposition and a substitution
    ("Q12345678", "12345699", "near"),      # near on the digits alone
    ("12345678", "12399978", "differ"),     # three edits
    ("AB1234", "AB1256", "near"),
    ("AB123", "AB145", "differ"),           # two edits in a value shorter than identifier_near_min_length
    ("12345678", "87654321", "differ"),
    ("12345678", "", "missing"),
])
def test_document_levels(left, right, level):
    levels, _, _ = score_one(l_document=left, r_document=right)
    assert levels["document"] == level


def test_phone_and_sibling_name_is_not_a_link():
    # a family phone shared by siblings: same phone, same surnames, different given names
    _, rule, _ = score_one(l_phone="987654321", r_phone="987654321",
                           l_name="juan quispe mamani", r_name="maria quispe mamani")
    assert rule is None


def test_phone_and_strong_name_links():
    _, rule, _ = score_one(l_phone="987654321", r_phone="987654321",
                           l_name="juan carlos quispe", r_name="quispe juan carlos")
    assert rule == "phone_exact_name"


def test_document_disagreement_vetoes_phone_match():
    _, rule, _ = score_one(l_phone="987654321", r_phone="987654321", l_document="12345678",
                           r_document="44556677", l_name="juan quispe", r_name="juan quispe")
    assert rule is None


def test_two_typos_in_a_document_do_not_veto_a_phone_match():
    # the same phone and name; the documents differ by a two-character typo: weak evidence for,
    # where three or more edits (a different document) still veto
    levels, rule, _ = score_one(l_phone="987654321", r_phone="987654321", l_document="40001234",
                                r_document="40001299", l_name="juan quispe", r_name="juan quispe")
    assert levels["document"] == "near" and rule == "phone_exact_name"
    _, rule, _ = score_one(l_phone="987654321", r_phone="987654321", l_document="40001234",
                           r_document="40009999", l_name="juan quispe", r_name="juan quispe")
    assert rule is None


def test_a_near_identifier_alone_never_links():
    # two-character typos in every identifier, an exact name: no rule accepts near evidence
    levels, rule, _ = score_one(l_phone="987654321", r_phone="987654399", l_document="40001234",
                                r_document="40001299", l_email="juan.quispe@gmail.com", r_email="juan.qispe@gmai.com",
                                l_name="juan carlos quispe", r_name="juan carlos quispe")
    assert (levels["phone"], levels["document"], levels["email"]) == ("near", "near", "near")
    assert rule is None


def test_near_level_can_be_turned_off():
    cfg = config.build(_with_levels(identifier_near_max_edits=1), "test")
    pairs = scoring.PairColumns.from_lists(**{k: [""] for k in (
        "l_phone", "r_phone", "l_email", "r_email", "l_plate", "r_plate", "l_name", "r_name")},
        l_document=["40001234"], r_document=["40001299"])
    assert scoring.LEVELS["document"][scoring.score_pairs(pairs, cfg).levels["document"][0]] == "differ"
    with pytest.raises(config.ConfigError, match="identifier_near_max_edits"):
        config.build(_with_levels(identifier_near_max_edits=0), "test")


def _with_levels(**values):
    data = config._defaults()
    data["levels"] = {**data["levels"], **values}
    return data


def test_names_and_plates_alone_never_link():
    _, rule, _ = score_one(l_plate="ABC123", r_plate="ABC123", l_name="juan quispe", r_name="juan quispe")
    assert rule is None


@pytest.mark.parametrize("fields,rule", [
    # an empty lead form and the driver a claim names it for: the claim alone places it
    ({"r_name": "rosa flores", "r_phone": "987000001"}, "claim_attribution"),
    # names that agree, or one missing a second surname: still the claim's rule
    ({"l_name": "rosa flores vega", "r_name": "rosa flores"}, "claim_attribution"),
    # a document that clearly differs, or a name that does not agree, outweighs the claim
    ({"l_document": "71112223", "r_document": "40999999"}, None),
    ({"l_name": "mario quispe", "r_name": "rosa flores"}, None),
    ({"l_name": "rosa quispe", "r_name": "rosa flores"}, None),    # one token in common: weak
    # and identifiers that agree take their own, stronger rule first
    ({"l_document": "40000001", "r_document": "40000001", "l_name": "rosa flores", "r_name": "rosa flores"},
     "document_exact_name"),
])
def test_a_claim_naming_the_lead_for_the_driver_links_unless_something_disagrees(fields, rule):
    levels, got, _ = score_one(l_claim="DRV-1", r_claim="DRV-1", **fields)
    assert levels["claim"] == "exact" and got == rule


def test_a_lead_claimed_for_another_driver_is_no_evidence_either_way():
    pair = {"l_phone": "987000001", "r_phone": "987000001", "l_name": "rosa flores", "r_name": "rosa flores"}
    plain, plain_rule, plain_score = score_one(**pair)
    levels, rule, score = score_one(l_claim="DRV-1", r_claim="DRV-2", **pair)
    assert (plain["claim"], levels["claim"]) == ("missing", "differ")
    assert (rule, score) == (plain_rule, plain_score) and rule == "phone_exact_name"


def test_a_claim_rule_may_not_let_an_identifier_or_the_names_disagree():
    data = config._defaults()
    good = next(r for r in data["rules"] if r["name"] == "claim_attribution")
    for field, levels in (("document", ["exact", "differ", "missing"]), ("name", ["exact", "weak", "missing"])):
        data["rules"] = [{**good, "when": {**good["when"], field: levels}}]
        with pytest.raises(config.ConfigError, match="claim rule"):
            config.build(data, "test")
    data["rules"] = [good]
    assert config.build(data, "test").rules[0].name == "claim_attribution"


def test_shared_identifier_is_missing_not_evidence():
    # dbt nulls shared values in the candidate table: a shared phone reaches scoring as ""
    levels, rule, _ = score_one(l_phone="", r_phone="", l_name="ana lopez", r_name="ana lopez")
    assert levels["phone"] == "missing" and rule is None


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(text, text, text, text, text, text), min_size=1, max_size=20))
def test_scoring_is_symmetric_and_total(rows):
    """Swapping left and right changes nothing; arbitrary unicode never crashes."""
    lp, rp, ld, rd, ln, rn = (list(c) for c in zip(*rows))
    a = scoring.score_pairs(scoring.PairColumns.from_lists(
        l_phone=lp, r_phone=rp, l_document=ld, r_document=rd, l_email=lp, r_email=rp,
        l_plate=ld, r_plate=rd, l_name=ln, r_name=rn), CFG)
    b = scoring.score_pairs(scoring.PairColumns.from_lists(
        l_phone=rp, r_phone=lp, l_document=rd, r_document=ld, l_email=rp, r_email=lp,
        l_plate=rd, r_plate=ld, l_name=rn, r_name=ln), CFG)
    for f in scoring.FIELDS:
        assert np.array_equal(a.levels[f], b.levels[f])
    assert np.allclose(a.score, b.score)
    assert np.array_equal(a.rule, b.rule)
    assert ((a.probability >= 0) & (a.probability <= 1)).all()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["ana", "luis", "quispe", "rojas", "mamani", "pena", "jose"]), min_size=2, max_size=5, unique=True),
       st.randoms())
def test_name_level_ignores_token_order(tokens, rnd):
    shuffled = tokens[:]
    rnd.shuffle(shuffled)
    levels, _, _ = score_one(l_name=" ".join(tokens), r_name=" ".join(shuffled))
    assert levels["name"] == "exact"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=60))
def test_components_match_a_reference_union_find(edges):
    left = np.array([a for a, _ in edges], dtype=np.int64)
    right = np.array([b for _, b in edges], dtype=np.int64)
    nodes, labels = connected_components(left, right)
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    for i, n in enumerate(nodes.tolist()):
        for j, m in enumerate(nodes.tolist()):
            assert (labels[i] == labels[j]) == (find(n) == find(m))
    best_nodes, best_edge = best_edge_per_node(left, right, np.arange(len(edges), dtype=np.float32))
    assert np.array_equal(best_nodes, nodes)
    for n, e in zip(best_nodes.tolist(), best_edge.tolist()):
        assert n in (left[e], right[e])
        incident = [k for k, (a, b) in enumerate(edges) if n in (a, b)]
        assert e == max(incident)


def test_best_edge_ties_go_to_the_smallest_other_end_whatever_the_order():
    left, right = np.array([5, 5, 5]), np.array([9, 7, 8])
    score = np.array([2.0, 2.0, 1.0], dtype=np.float32)
    for perm in ([0, 1, 2], [1, 0, 2], [2, 1, 0]):
        nodes, best = best_edge_per_node(left[perm], right[perm], score[perm])
        assert right[perm][best[list(nodes).index(5)]] == 7


def test_document_digits_one_edit_apart_is_close():
    levels, _, _ = score_one(l_document="Q12345679", r_document="12345678")
    assert levels["document"] == "close"


def test_document_alone_links_when_other_side_has_no_name_and_nothing_disagrees():
    _, rule, _ = score_one(l_document="40001234", r_document="40001234", l_name="ana rojas", r_name="")
    assert rule == "document_exact_name_missing"
    _, rule, _ = score_one(l_document="40001234", r_document="40001234", l_name="ana rojas", r_name="",
                           l_phone="987654321", r_phone="912345678")
    assert rule is None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["987654321", "987654312", "912345678", ""]),
    st.sampled_from(["987654321", "955555555", ""]),
    st.sampled_from(["40001234", "Q40001234", "40001243", "71234567", ""]),
    st.sampled_from(["40001234", "88887777", ""]),
    st.sampled_from(["juan carlos quispe", "quispe juan", "maria quispe mamani", "j carlos quispe", ""]),
    st.sampled_from(["juan carlos quispe", "carlos quispe juan", "pedro rojas", ""]),
    st.integers(0, 4)), min_size=1, max_size=30))
def test_pruning_never_changes_a_decision(rows):
    lp, rp, ld, rd, ln, rn, freq = (list(c) for c in zip(*rows))
    cols = scoring.PairColumns.from_lists(l_phone=lp, r_phone=rp, l_document=ld, r_document=rd, l_email=[""] * len(lp),
                                          r_email=[""] * len(lp), l_plate=[""] * len(lp), r_plate=[""] * len(lp),
                                          l_name=ln, r_name=rn, name_frequency=freq)
    pruned, full = scoring.score_pairs(cols, CFG), scoring.score_pairs(cols, CFG, prune=False)
    assert np.array_equal(pruned.rule, full.rule)
    accepted = full.rule >= 0
    assert np.allclose(pruned.score[accepted], full.score[accepted])


# ---------------------------------------------------------------- coded scoring = reference

def _reference_scores(cols: dict, freq):
    import scoring_reference as ref
    pairs = ref.PairColumns.from_lists(name_frequency=freq, **cols)
    return ref.score_pairs(pairs, CFG), ref.score_pairs(pairs, CFG, prune=False)


phones = st.sampled_from(["987654321", "987654312", "987654322", "987654399", "912345678", "9876543", ""])
documents = st.sampled_from(["40001234", "Q40001234", "40001243", "4000123", "X-40001234", "40001299", "Q40001299",
                             "71234567", "AB12", "AB34", ""])
emails = st.sampled_from(["juan.quispe@gmail.com", "juan.qispe@gmai.com", "juan.quispe@hotmail.com", "juan.quispr@gmail.com", "jq@x.pe", "jq@yahoo.es",
                          "jq@y.pe", "ana@gmail.com", ""])
plates = st.sampled_from(["ABC123", "ABC124", "BAC123", "ABD124", "ABD12", "ABC1", "XYZ987", ""])
claims = st.sampled_from(["DRV-1", "DRV-2", ""])
names = st.sampled_from(["juan carlos quispe mamani", "quispe mamani juan carlos", "j carlos quispe",
                         "juan quispe", "juan quispr", "maria del carmen rojas", "maria carmen rojas", "de la cruz",
                         "jose luis nunez pena", "jose luis nunes pena", "pedro", "a b c d e f g", ""])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(phones, phones, documents, documents, emails, emails, plates, plates, names, names,
                          st.integers(0, 4), claims, claims), min_size=1, max_size=40),
       st.one_of(st.none(), text))
def test_coded_scoring_equals_the_string_reference(rows, extra):
    """Codes, per-value caches and distinct-pair comparisons change nothing: every level, score,
    similarity and rule equals the direct string formulation, pruned or not."""
    if extra is not None:  # arbitrary unicode in every field of one more pair
        rows = rows + [(extra,) * 10 + (1, extra, extra)]
    columns = list(zip(*rows))
    keys = ("l_phone", "r_phone", "l_document", "r_document", "l_email", "r_email", "l_plate", "r_plate",
            "l_name", "r_name")
    cols = {k: list(v) for k, v in zip(keys, columns)}
    cols["l_claim"], cols["r_claim"] = list(columns[11]), list(columns[12])
    freq = list(columns[10])
    ref_pruned, ref_full = _reference_scores(cols, freq)
    pairs = scoring.PairColumns.from_lists(name_frequency=freq, **cols)
    for prune, ref in ((True, ref_pruned), (False, ref_full)):
        got = scoring.score_pairs(pairs, CFG, prune=prune)
        for f in scoring.FIELDS:
            assert np.array_equal(got.levels[f], ref.levels[f]), f
        assert np.array_equal(got.score, ref.score)
        assert np.array_equal(got.name_similarity, ref.name_similarity)
        assert np.array_equal(got.rule, ref.rule)


def test_batches_scored_against_shared_values_equal_one_by_one():
    """The runner encodes every record once and scores batches against the same Values: the
    cached forms must not depend on which batch asked first."""
    rng = np.random.default_rng(5)
    pool = {"phone": ["987654321", "987654312", "912345678", ""], "document": ["40001234", "Q40001234", "40001243", ""],
            "email": ["a.b@x.pe", "a.b@y.pe", ""], "plate": ["ABC123", "ABC124", ""],
            "name": ["juan quispe", "quispe juan", "j quispe", "maria rojas", ""], "claim": ["DRV-1", "DRV-2", ""]}
    n_records = 50
    record = {f: [pool[f][i] for i in rng.integers(0, len(pool[f]), n_records)] for f in scoring.FIELDS}
    values, codes = {}, {}
    for f in scoring.FIELDS:
        values[f], (codes[f],) = scoring.Values.encode(record[f])
    li, ri = rng.integers(0, n_records, 300), rng.integers(0, n_records, 300)
    for start in (0, 100, 200):
        bl, br = li[start:start + 100], ri[start:start + 100]
        coded = scoring.score_pairs(scoring.CodedPairs(values, {f: codes[f][bl] for f in codes},
                                                       {f: codes[f][br] for f in codes}), CFG)
        plain = scoring.score_pairs(scoring.PairColumns.from_lists(
            **{f"{side}_{f}": [record[f][i] for i in idx] for f in scoring.FIELDS for side, idx in (("l", bl), ("r", br))}),
            CFG)
        assert np.array_equal(coded.rule, plain.rule) and np.array_equal(coded.score, plain.score)
        for f in scoring.FIELDS:
            assert np.array_equal(coded.levels[f], plain.levels[f])


def test_blocking_and_scoring_drop_the_same_name_particles():
    """Blocking (macros/blocking_keys.sql) and scoring must agree on which tokens carry no identity,
    or two names scoring `exact` could share no name key. Blocking also drops every one-letter
    token (initials), so the lists need only agree on longer tokens (scoring also drops "e")."""
    import re
    from pathlib import Path

    macro = (Path(__file__).resolve().parents[1] / "macros" / "blocking_keys.sql").read_text()
    body = re.search(r"macro name_particles\(\).*?return\(\[(.*?)\]\)", macro, re.S)
    assert body, "name_particles() not found in macros/blocking_keys.sql"
    blocking = set(re.findall(r"'([^']+)'", body.group(1)))
    assert {p for p in blocking if len(p) > 1} == {p for p in scoring.NAME_PARTICLES if len(p) > 1}
