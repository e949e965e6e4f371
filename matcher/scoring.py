"""Pair scoring: field agreement levels, weights, and the rule that accepts a pair.

Everything here is column-wise and works on *codes*: each field's distinct values are held
once (`Values`, code 0 is the empty value), a pair is two integer codes per field, and what a
value needs for comparison (its digits, an email's local part, a name's tokens) is computed
once per distinct value and cached for the whole run. Exact agreement is code equality; the
edit-distance and Jaro-Winkler comparisons run in rapidfuzz's C code (`process.cpdist`) once
per pair (names: per distinct pair of tokens). There is no Python loop over pairs.

Levels per field (see defaults.toml for weights):
- phone / document / plate: exact, close (<= N edits, Optimal String Alignment so a
  transposition is one edit), near (two-character typos: more than N edits and at most M, in
  values long enough), differ, missing. Documents are also exact when their digits alone
  agree and are long enough (a licence "Q12345678" and the DNI "12345678").
- email: exact, close (same local part, or one edit), near, differ, missing.
- name: exact (same sorted tokens), strong (every token of the shorter name matches a token
  of the longer one: swapped order, missing second surname, initials, typos), fair (two or
  more tokens match, not all: relatives share surnames), weak (one token), differ, missing.

`tests/scoring_reference.py` keeps the direct formulation of the levels over string arrays; a property test
checks that both agree on every level, score and rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import OSA, JaroWinkler

from matcher.config import FIELDS, IDENTIFIER_FIELDS, LEVELS, Config

MAX_TOKENS = 5
# Particles of Spanish/Portuguese names carry no identity ("maria del carmen", "de la cruz").
NAME_PARTICLES = frozenset({"de", "del", "la", "las", "los", "y", "da", "das", "do", "dos", "e", "van", "von", "di"})

CODE = {field: {level: i for i, level in enumerate(LEVELS[field])} for field in FIELDS}
_NOT_DIGITS = str.maketrans("", "", "".join(chr(c) for c in range(128) if not chr(c).isdigit()))


class Values:
    """The distinct values of one field; code 0 is the empty value (null).

    Derived forms (digits, email local parts, name tokens) are computed on first use, once per
    distinct value, and kept: a run encodes its records once and scores every batch against the
    same `Values`.
    """

    def __init__(self, strings: list[str]):
        if not strings or strings[0] != "":
            raise ValueError("code 0 must be the empty value")
        self.strings = np.array(strings, dtype=object)

    def __len__(self) -> int:
        return len(self.strings)

    @classmethod
    def encode(cls, *columns) -> tuple[Values, list[np.ndarray]]:
        """Values of one field and each column's codes (None and "" are the empty value)."""
        index: dict[str, int] = {"": 0}
        codes = []
        for column in columns:
            column = list(column)
            codes.append(np.fromiter((index.setdefault(v or "", len(index)) for v in column),
                                     dtype=np.int32, count=len(column)))
        return cls(list(index)), codes

    @cached_property
    def lengths(self) -> np.ndarray:
        return np.fromiter(map(len, self.strings), dtype=np.int32, count=len(self.strings))

    @cached_property
    def digits(self) -> tuple[Values, np.ndarray]:
        """(values of the digit-only forms, the code of each value's digits among them)."""
        forms, (codes,) = Values.encode(v.translate(_NOT_DIGITS) for v in self.strings)
        return forms, codes

    @cached_property
    def local_parts(self) -> tuple[Values, np.ndarray]:
        """(values of email local parts, the code of each value's local part)."""
        forms, (codes,) = Values.encode(v.partition("@")[0] for v in self.strings)
        return forms, codes

    @cached_property
    def tokens(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Names -> (token-id matrix [values, MAX_TOKENS] with -1 pads, id of each value's sorted
        token form, vocabulary of token strings)."""
        vocab: dict[str, int] = {}
        forms: dict[str, int] = {}
        ids = np.full((len(self.strings), MAX_TOKENS), -1, dtype=np.int32)
        form_id = np.empty(len(self.strings), dtype=np.int64)
        for i, name in enumerate(self.strings.tolist()):
            toks = sorted({t for t in name.split() if t not in NAME_PARTICLES})
            form_id[i] = forms.setdefault(" ".join(toks), len(forms))
            for j, tok in enumerate(toks[:MAX_TOKENS]):
                ids[i, j] = vocab.setdefault(tok, len(vocab))
        return ids, form_id, Values([""] + list(vocab)) if vocab else Values([""])

    @cached_property
    def first_letters(self) -> np.ndarray:
        return np.array([v[:1] for v in self.strings], dtype=object)


@dataclass
class CodedPairs:
    """A batch of pairs as codes into each field's `Values`."""

    values: dict[str, Values]
    left: dict[str, np.ndarray]
    right: dict[str, np.ndarray]
    # records carrying the more common of the two exact names (0: unknown)
    name_frequency: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.left["phone"])


@dataclass
class PairColumns:
    """Aligned string columns for a batch of pairs; "" (or None) stands for null."""

    l_phone: list
    r_phone: list
    l_document: list
    r_document: list
    l_email: list
    r_email: list
    l_plate: list
    r_plate: list
    l_name: list
    r_name: list
    name_frequency: np.ndarray | None = None
    # the driver claims name each record for (identity_records.claim_driver_id); None: nobody's
    l_claim: list | None = None
    r_claim: list | None = None

    def __len__(self) -> int:
        return len(self.l_phone)

    @classmethod
    def from_lists(cls, name_frequency=None, **columns) -> PairColumns:
        freq = None if name_frequency is None else np.asarray(name_frequency, dtype=np.int32)
        return cls(**{k: list(v) for k, v in columns.items()}, name_frequency=freq)

    def coded(self) -> CodedPairs:
        values, left, right = {}, {}, {}
        for f in FIELDS:
            sides = [getattr(self, f"l_{f}"), getattr(self, f"r_{f}")]
            values[f], (left[f], right[f]) = Values.encode(*[[""] * len(self) if s is None else s for s in sides])
        return CodedPairs(values, left, right, self.name_frequency)


@dataclass
class Scores:
    levels: dict[str, np.ndarray]   # field -> int8 level codes (index into LEVELS[field])
    name_similarity: np.ndarray     # 0..100, mean best-token similarity over both names
    score: np.ndarray               # sum of weights (log2 Bayes factor)
    probability: np.ndarray         # logistic of score around the configured midpoint
    rule: np.ndarray                # index into config.rules, -1 when no rule accepts the pair

    @property
    def accepted(self) -> np.ndarray:
        return self.rule >= 0


def _pair_distance(values: Values, a: np.ndarray, b: np.ndarray, scorer) -> np.ndarray:
    """scorer(values[a[i]], values[b[i]]) for every i. (Identifier pairs are nearly all distinct:
    deduplicating them first costs a sort and saves almost nothing.) The strings go to rapidfuzz
    as lists made by `take(...).tolist()`, not `list(strings[a])`, which steps a numpy iterator
    per item: a quarter less time making them (docs/benchmark.md, round 16)."""
    return np.asarray(process.cpdist(values.strings.take(a).tolist(), values.strings.take(b).tolist(),
                                     scorer=scorer, workers=-1))


@dataclass(frozen=True)
class Edits:
    """Edit bounds of the identifier levels: `close` is at most `close` edits; `near` is more
    than that and at most `near` edits, between values of at least `near_min_length` characters
    (both sides: two edits in a 4-character value leave little of it)."""
    close: int
    near: int
    near_min_length: int

    @classmethod
    def of(cls, config: Config) -> Edits:
        return cls(config.close_max_edits, config.near_max_edits, config.near_min_length)


def _edit_levels(out: np.ndarray, todo: np.ndarray, dist: np.ndarray, shortest: np.ndarray, edits: Edits) -> None:
    """Set `close` / `near` at `todo` (an identifier field's pairs, by index) from their edit
    distances and the length of the shorter value."""
    codes = CODE["phone"]
    out[todo[dist <= edits.close]] = codes["close"]
    if edits.near > edits.close:
        out[todo[(dist > edits.close) & (dist <= edits.near) & (shortest >= edits.near_min_length)]] = codes["near"]


def _identifier_levels(values: Values, left: np.ndarray, right: np.ndarray, edits: Edits) -> np.ndarray:
    codes = CODE["phone"]
    present = (left != 0) & (right != 0)
    exact = present & (left == right)
    out = np.full(len(left), codes["missing"], dtype=np.int8)
    out[present] = codes["differ"]
    todo = np.flatnonzero(present & ~exact)
    if todo.size:
        dist = _pair_distance(values, left[todo], right[todo], OSA.distance)
        _edit_levels(out, todo, dist, np.minimum(values.lengths[left[todo]], values.lengths[right[todo]]), edits)
    out[exact] = codes["exact"]
    return out


def _document_levels(values: Values, left, right, edits: Edits, min_digits: int) -> np.ndarray:
    """Documents compare on their full form, and on their digits alone when long enough:
    licence "Q12345678" equals DNI "12345678", and "Q12345679" is one edit from it (the
    closer of the two forms wins)."""
    codes = CODE["document"]
    out = _identifier_levels(values, left, right, edits)
    if not len(left):
        return out
    digits, of = values.digits
    ld, rd = of[left], of[right]
    long_enough = (digits.lengths[ld] >= min_digits) & (digits.lengths[rd] >= min_digits)
    out[long_enough & (ld == rd) & (out != codes["missing"])] = codes["exact"]
    todo = np.flatnonzero(long_enough & ((out == codes["differ"]) | (out == codes["near"])))
    if todo.size:
        dist = _pair_distance(digits, ld[todo], rd[todo], OSA.distance)
        # only ever raises a level: differ -> near or close, near -> close
        _edit_levels(out, todo, dist, np.minimum(digits.lengths[ld[todo]], digits.lengths[rd[todo]]), edits)
    return out


def _email_levels(values: Values, left, right, edits: Edits) -> np.ndarray:
    out = _identifier_levels(values, left, right, edits)
    differ = np.flatnonzero((out == CODE["email"]["differ"]) | (out == CODE["email"]["near"]))
    if differ.size:
        locals_, of = values.local_parts
        l_local, r_local = of[left[differ]], of[right[differ]]
        same_local = (l_local == r_local) & (locals_.lengths[l_local] >= 4)
        out[differ[same_local]] = CODE["email"]["close"]
    return out


def _claim_levels(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The same driver named (or a driver and a lead named for it): exact; both named, not the same: differ."""
    codes = CODE["claim"]
    present = (left != 0) & (right != 0)
    out = np.full(len(left), codes["missing"], dtype=np.int8)
    out[present] = codes["differ"]
    out[present & (left == right)] = codes["exact"]
    return out


def _token_similarity(a: np.ndarray, b: np.ndarray, words: Values, token_match: float) -> np.ndarray:
    """Jaro-Winkler of token-id pairs (ids index `words`), computed once per distinct pair; an
    initial ("j") agrees with any token starting with that letter."""
    n_words = max(len(words), 1)
    keys, inverse = np.unique(a.astype(np.int64) * n_words + b, return_inverse=True)
    ka, kb = keys // n_words, keys % n_words
    sim = np.ones(len(keys), dtype=np.float32)
    differ = np.flatnonzero(ka != kb)
    if differ.size:
        wa, wb = words.strings[ka[differ]], words.strings[kb[differ]]
        sim[differ] = process.cpdist(wa.tolist(), wb.tolist(), scorer=JaroWinkler.normalized_similarity, workers=-1)
        lens, first = words.lengths, words.first_letters
        initial = ((lens[ka[differ]] == 1) | (lens[kb[differ]] == 1)) & (first[ka[differ]] == first[kb[differ]])
        sim[differ[initial]] = np.maximum(sim[differ[initial]], token_match + 0.01)
    return sim[inverse]


def _name_levels(values: Values, left: np.ndarray, right: np.ndarray, token_match: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(levels, similarity 0..100, token count of the shorter name)."""
    codes = CODE["name"]
    n = len(left)
    out = np.full(n, codes["missing"], dtype=np.int8)
    if n == 0:
        return out, np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    ids, form_id, words = values.tokens
    # token ids shifted by one: id 0 of `words` is its empty value
    L, R = ids[left], ids[right]                              # [n, MAX_TOKENS] token ids, -1 = none
    l_real, r_real = L >= 0, R >= 0
    nl, nr = l_real.sum(axis=1), r_real.sum(axis=1)

    A = np.broadcast_to(L[:, :, None], (n, MAX_TOKENS, MAX_TOKENS))
    B = np.broadcast_to(R[:, None, :], (n, MAX_TOKENS, MAX_TOKENS))
    valid = (A >= 0) & (B >= 0)
    sim = np.zeros((n, MAX_TOKENS, MAX_TOKENS), dtype=np.float32)
    if valid.any():
        sim[valid] = _token_similarity(A[valid] + 1, B[valid] + 1, words, token_match)

    best_l = sim.max(axis=2)
    best_r = sim.max(axis=1)
    matched_l = ((best_l >= token_match) & l_real).sum(axis=1)
    matched_r = ((best_r >= token_match) & r_real).sum(axis=1)
    short_is_left = nl <= nr
    n_short = np.where(short_is_left, nl, nr)
    matched_short = np.where(short_is_left, matched_l, matched_r)
    total = np.maximum(nl + nr, 1)
    similarity = (100.0 * (best_l.sum(axis=1) + best_r.sum(axis=1)) / total).astype(np.float32)

    present = (nl > 0) & (nr > 0)
    level = np.full(n, codes["differ"], dtype=np.int8)
    level[matched_short >= 1] = codes["weak"]
    level[matched_short >= 2] = codes["fair"]
    level[(matched_short == n_short) & (n_short >= 2)] = codes["strong"]
    level[form_id[left] == form_id[right]] = codes["exact"]
    out[present] = level[present]
    similarity[~present] = 0.0
    return out, similarity, n_short


def warm(values: dict[str, Values]) -> None:
    """Compute now every per-value cache `score_pairs` reads (lengths, digit forms, email local
    parts, name tokens and their words' lengths and first letters). A run does it once before it
    forks its scoring (matcher.forked): each child would otherwise compute them again."""
    for field in ("phone", "document", "email", "plate"):
        values[field].lengths
    digits, _ = values["document"].digits
    digits.lengths
    local_parts, _ = values["email"].local_parts
    local_parts.lengths
    _, _, words = values["name"].tokens
    words.lengths
    words.first_letters


def score_pairs(pairs: PairColumns | CodedPairs, config: Config, *, prune: bool = True) -> Scores:
    """Levels, score and rule per pair.

    With `prune`, names are compared only where they could matter: a pair whose identifiers
    score so low that even an exact name could not reach any rule's floor is rejected without
    the (costly) name comparison; its name level is then reported as `missing` and its score
    is its identifier score. Accept/reject decisions are identical either way (a test checks).
    """
    if isinstance(pairs, PairColumns):
        pairs = pairs.coded()
    n = len(pairs)
    edits = Edits.of(config)
    V, L, R = pairs.values, pairs.left, pairs.right
    levels = {
        "phone": _identifier_levels(V["phone"], L["phone"], R["phone"], edits),
        "document": _document_levels(V["document"], L["document"], R["document"], edits, config.document_min_digits),
        "email": _email_levels(V["email"], L["email"], R["email"], edits),
        "plate": _identifier_levels(V["plate"], L["plate"], R["plate"], edits),
        "claim": _claim_levels(L["claim"], R["claim"]),
    }
    score = identifier_score(levels, config)
    compare = names_worth_comparing(score, config, prune)
    levels["name"] = np.full(n, CODE["name"]["missing"], dtype=np.int8)
    name_similarity = np.zeros(n, dtype=np.float32)
    name_tokens = np.zeros(n, dtype=np.int64)
    if compare.size:
        lv, sim, tok = _name_levels(V["name"], L["name"][compare], R["name"][compare], config.name_token_match)
        levels["name"][compare], name_similarity[compare], name_tokens[compare] = lv, sim, tok
    return combine(levels, name_similarity, name_tokens, score, pairs.name_frequency, config)


def identifier_score(levels: dict[str, np.ndarray], config: Config) -> np.ndarray:
    """Sum of the identifier fields' weights (every field but the name)."""
    score = np.zeros(len(levels["phone"]), dtype=np.float32)
    for f in FIELDS[:-1]:
        lookup = np.array([config.weights[f][lv] for lv in LEVELS[f]], dtype=np.float32)
        score += lookup[levels[f]]
    return score


def names_worth_comparing(score: np.ndarray, config: Config, prune: bool) -> np.ndarray:
    """Pairs whose identifier score an exact name could lift to some rule's floor (all with no pruning)."""
    if not prune:
        return np.arange(len(score))
    best_name = max(config.weights["name"].values())
    floor = min(r.min_score for r in config.rules)
    return np.flatnonzero(score + best_name >= floor)


def combine(levels: dict[str, np.ndarray], name_similarity: np.ndarray, name_tokens: np.ndarray,
            score: np.ndarray, frequency: np.ndarray | None, config: Config) -> Scores:
    """Add the name's weight to the identifier score, then probability and the first rule that accepts."""
    n = len(score)
    name_weights = np.array([config.weights["name"][lv] for lv in LEVELS["name"]], dtype=np.float32)
    score = score + name_weights[levels["name"]]
    frequency = frequency if frequency is not None else np.zeros(n, dtype=np.int32)
    probability = 1.0 / (1.0 + np.exp2(-(score - config.score_midpoint)))

    exact_ids = sum((levels[f] == CODE[f]["exact"]).astype(np.int8) for f in IDENTIFIER_FIELDS)
    agreeing_ids = sum(np.isin(levels[f], [CODE[f]["exact"], CODE[f]["close"]]).astype(np.int8) for f in IDENTIFIER_FIELDS)

    rule = np.full(n, -1, dtype=np.int16)
    for index, r in enumerate(config.rules):
        ok = (rule < 0) & (score >= r.min_score)
        ok &= exact_ids >= r.min_exact_identifiers
        ok &= agreeing_ids >= r.min_identifier_agreements
        if r.max_name_frequency is not None:
            # term frequency: only a name this rare counts (0 = unknown frequency, never rare)
            ok &= (frequency > 0) & (frequency <= r.max_name_frequency)
        ok &= name_tokens >= r.min_name_tokens
        for field, allowed in r.when.items():
            ok &= np.isin(levels[field], [CODE[field][lv] for lv in allowed])
        rule[ok] = index
    return Scores(levels=levels, name_similarity=name_similarity, score=score, probability=probability, rule=rule)


def level_names(field: str, codes: np.ndarray) -> np.ndarray:
    return np.asarray(LEVELS[field], dtype=object)[codes]
