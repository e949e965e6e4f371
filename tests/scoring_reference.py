"""Reference for tests: the plain, string-array version of matcher/scoring.py.

matcher/scoring.py works on integer codes into each field's distinct values (computing digits,
local parts and name tokens once per value, comparing each distinct pair once); this file
keeps the direct formulation of the levels over aligned string arrays (weights and rules are
matcher.scoring's own), and tests/test_scoring.py checks that both give identical levels,
similarities, scores and rules.

Original docstring: pair scoring: field agreement levels, weights, and the rule that accepts a pair.

Everything here is column-wise: inputs are aligned arrays (one element per candidate pair,
`""` for null), comparisons run in rapidfuzz's C code through `process.cpdist`, and levels,
scores and rules are combined with numpy. There is no Python loop over pairs; the only loop
over values is the tokenization of each *distinct* name.

Levels per field (see defaults.toml for weights):
- phone / document / plate: exact, close (<= N edits, Optimal String Alignment so a
  transposition is one edit), differ, missing. Documents are also exact when their digits alone
  agree and are long enough (a licence "Q12345678" and the DNI "12345678").
- email: exact, close (same local part, or one edit), differ, missing.
- claim: exact (the same driver named), differ, missing.
- name: exact (same sorted tokens), strong (every token of the shorter name matches a token
  of the longer one: swapped order, missing second surname, initials, typos), fair (two or
  more tokens match, not all: relatives share surnames), weak (one token), differ, missing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import OSA, JaroWinkler

from matcher.config import FIELDS, LEVELS, Config
# the weights and rules are shared: what this file keeps apart is how levels are computed
from matcher.scoring import Scores, combine, identifier_score, names_worth_comparing

MAX_TOKENS = 5
# Particles of Spanish/Portuguese names carry no identity ("maria del carmen", "de la cruz").
NAME_PARTICLES = frozenset({"de", "del", "la", "las", "los", "y", "da", "das", "do", "dos", "e", "van", "von", "di"})

CODE = {field: {level: i for i, level in enumerate(LEVELS[field])} for field in FIELDS}


@dataclass
class PairColumns:
    """Aligned columns for a batch of pairs; "" stands for null."""

    l_phone: np.ndarray
    r_phone: np.ndarray
    l_document: np.ndarray
    r_document: np.ndarray
    l_email: np.ndarray
    r_email: np.ndarray
    l_plate: np.ndarray
    r_plate: np.ndarray
    l_name: np.ndarray
    r_name: np.ndarray
    # records carrying the more common of the two exact names (0: unknown)
    name_frequency: np.ndarray | None = None
    # the driver claims name each record for; None: nobody's
    l_claim: np.ndarray | None = None
    r_claim: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.l_phone)

    @classmethod
    def from_lists(cls, name_frequency=None, **columns) -> PairColumns:
        freq = None if name_frequency is None else np.asarray(name_frequency, dtype=np.int32)
        return cls(**{k: _as_str_array(v) for k, v in columns.items()}, name_frequency=freq)


def _as_str_array(values) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    if arr.size and (arr == None).any():  # noqa: E711 - elementwise comparison
        arr = np.where(arr == None, "", arr)  # noqa: E711
    return arr.astype(str) if arr.size else np.array([], dtype=str)


def _edit_level(dist: int, shortest: int, config: Config) -> str | None:
    """close / near from one pair's edit distance and its shorter value's length, else None."""
    if dist <= config.close_max_edits:
        return "close"
    if dist <= config.near_max_edits and shortest >= config.near_min_length:
        return "near"
    return None


def _identifier_levels(left: np.ndarray, right: np.ndarray, config: Config) -> np.ndarray:
    codes = CODE["phone"]
    out = np.full(len(left), codes["missing"], dtype=np.int8)
    for i, (a, b) in enumerate(zip(left, right)):
        if a == "" or b == "":
            continue
        if a == b:
            out[i] = codes["exact"]
            continue
        level = _edit_level(OSA.distance(a, b), min(len(a), len(b)), config)
        out[i] = codes[level or "differ"]
    return out


def _digits(values: np.ndarray) -> np.ndarray:
    """Digits of each value ("" when none); computed once per distinct value."""
    uniq, inverse = np.unique(values, return_inverse=True)
    table = str.maketrans("", "", "".join(chr(c) for c in range(128) if not chr(c).isdigit()))
    stripped = np.array([u.translate(table) for u in uniq], dtype=str) if uniq.size else uniq
    return stripped[inverse]


def _document_levels(left, right, config: Config) -> np.ndarray:
    """Documents compare on their full form, and on their digits alone when long enough:
    licence "Q12345678" equals DNI "12345678", and "Q12345679" is one edit from it; the closer
    of the two forms wins."""
    codes = CODE["document"]
    out = _identifier_levels(left, right, config)
    if not len(left):
        return out
    ld, rd = _digits(left), _digits(right)
    for i in range(len(left)):
        if out[i] == codes["missing"] or min(len(ld[i]), len(rd[i])) < config.document_min_digits:
            continue
        if ld[i] == rd[i]:
            out[i] = codes["exact"]
            continue
        level = _edit_level(OSA.distance(ld[i], rd[i]), min(len(ld[i]), len(rd[i])), config)
        if level is not None:
            out[i] = min(out[i], codes[level])
    return out


def _email_levels(left, right, config: Config) -> np.ndarray:
    out = _identifier_levels(left, right, config)
    differ = np.flatnonzero((out == CODE["email"]["differ"]) | (out == CODE["email"]["near"]))
    if differ.size:
        at_l, at_r = np.asarray("@", dtype=left.dtype), np.asarray("@", dtype=right.dtype)
        l_local = np.char.partition(left[differ], at_l)[:, 0]
        r_local = np.char.partition(right[differ], at_r)[:, 0]
        same_local = (l_local == r_local) & (np.char.str_len(l_local) >= 4)
        out[differ[same_local]] = CODE["email"]["close"]
    return out


def _tokenize(names: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Names -> (inverse into distinct names, token-id matrix [distinct, MAX_TOKENS] with -1 pads,
    id of each distinct name's sorted token form, vocabulary of token strings)."""
    uniq, inverse = np.unique(names, return_inverse=True)
    vocab: dict[str, int] = {}
    forms: dict[str, int] = {}
    ids = np.full((len(uniq), MAX_TOKENS), -1, dtype=np.int32)
    form_id = np.empty(len(uniq), dtype=np.int64)
    for i, name in enumerate(uniq.tolist()):
        toks = sorted({t for t in name.split() if t not in NAME_PARTICLES})
        form_id[i] = forms.setdefault(" ".join(toks), len(forms))
        for j, tok in enumerate(toks[:MAX_TOKENS]):
            ids[i, j] = vocab.setdefault(tok, len(vocab))
    words = np.array(list(vocab), dtype=object) if vocab else np.array([], dtype=object)
    return inverse, ids, form_id, words


def _token_similarity(a: np.ndarray, b: np.ndarray, words: np.ndarray, token_match: float) -> np.ndarray:
    """Jaro-Winkler of token-id pairs, computed once per distinct pair; an initial ("j")
    agrees with any token starting with that letter."""
    n_words = max(len(words), 1)
    keys, inverse = np.unique(a.astype(np.int64) * n_words + b, return_inverse=True)
    ka, kb = keys // n_words, keys % n_words
    sim = np.ones(len(keys), dtype=np.float32)
    differ = np.flatnonzero(ka != kb)
    if differ.size:
        wa, wb = words[ka[differ]], words[kb[differ]]
        sim[differ] = process.cpdist(list(wa), list(wb), scorer=JaroWinkler.normalized_similarity, workers=-1)
        lens = np.fromiter(map(len, words), dtype=np.int32, count=len(words))
        first = np.array([w[:1] for w in words], dtype=object)
        initial = ((lens[ka[differ]] == 1) | (lens[kb[differ]] == 1)) & (first[ka[differ]] == first[kb[differ]])
        sim[differ[initial]] = np.maximum(sim[differ[initial]], token_match + 0.01)
    return sim[inverse]


def _name_levels(left: np.ndarray, right: np.ndarray, token_match: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(levels, similarity 0..100, token count of the shorter name)."""
    codes = CODE["name"]
    n = len(left)
    out = np.full(n, codes["missing"], dtype=np.int8)
    if n == 0:
        return out, np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    inverse, ids, form_id, words = _tokenize(np.concatenate([left, right]))
    li, ri = inverse[:n], inverse[n:]
    L, R = ids[li], ids[ri]                                   # [n, MAX_TOKENS] token ids, -1 = none
    l_real, r_real = L >= 0, R >= 0
    nl, nr = l_real.sum(axis=1), r_real.sum(axis=1)

    A = np.broadcast_to(L[:, :, None], (n, MAX_TOKENS, MAX_TOKENS))
    B = np.broadcast_to(R[:, None, :], (n, MAX_TOKENS, MAX_TOKENS))
    valid = (A >= 0) & (B >= 0)
    sim = np.zeros((n, MAX_TOKENS, MAX_TOKENS), dtype=np.float32)
    if valid.any():
        sim[valid] = _token_similarity(A[valid], B[valid], words, token_match)

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
    level[form_id[li] == form_id[ri]] = codes["exact"]
    out[present] = level[present]
    similarity[~present] = 0.0
    return out, similarity, n_short


def _claim_levels(left: np.ndarray | None, right: np.ndarray | None, n: int) -> np.ndarray:
    """exact: the same driver; differ: two drivers; missing: either side names none."""
    codes = CODE["claim"]
    out = np.full(n, codes["missing"], dtype=np.int8)
    if left is None or right is None:
        return out
    present = (left != "") & (right != "")
    out[present] = np.where(left[present] == right[present], codes["exact"], codes["differ"])
    return out


def score_pairs(pairs: PairColumns, config: Config, *, prune: bool = True) -> Scores:
    """Levels, score and rule per pair.

    With `prune`, names are compared only where they could matter: a pair whose identifiers
    score so low that even an exact name could not reach any rule's floor is rejected without
    the (costly) name comparison; its name level is then reported as `missing` and its score
    is its identifier score. Accept/reject decisions are identical either way (a test checks).
    """
    n = len(pairs)
    levels = {
        "phone": _identifier_levels(pairs.l_phone, pairs.r_phone, config),
        "document": _document_levels(pairs.l_document, pairs.r_document, config),
        "email": _email_levels(pairs.l_email, pairs.r_email, config),
        "plate": _identifier_levels(pairs.l_plate, pairs.r_plate, config),
        "claim": _claim_levels(pairs.l_claim, pairs.r_claim, n),
    }
    score = identifier_score(levels, config)
    compare = names_worth_comparing(score, config, prune)
    levels["name"] = np.full(n, CODE["name"]["missing"], dtype=np.int8)
    name_similarity = np.zeros(n, dtype=np.float32)
    name_tokens = np.zeros(n, dtype=np.int64)
    if compare.size:
        lv, sim, tok = _name_levels(pairs.l_name[compare], pairs.r_name[compare], config.name_token_match)
        levels["name"][compare], name_similarity[compare], name_tokens[compare] = lv, sim, tok
    return combine(levels, name_similarity, name_tokens, score, pairs.name_frequency, config)

