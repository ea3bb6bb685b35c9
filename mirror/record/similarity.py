"""How alike two outcome texts are: the loose text form and the similarity ``mirror.record.classes``
matches outcomes with (docs/classes.md, "Matching outcomes").

Texts are compared loosely (HTML markup, entities, markdown escapes, bullets, typography and
whitespace are formatting, not wording), then as weighted sets of stemmed words, with
acronyms spelt out where the other text spells them, typo fixes counted as the same word,
and a measure's core (the words before its first qualifier) weighing most.
"""

from __future__ import annotations

import difflib
import html
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Final

# Outcome similarity (0..1) at or above which an old and a new outcome are the same outcome.
MATCH_THRESHOLD: Final = 0.5
MEASURE_WEIGHT: Final = 0.65  # of the similarity when both outcomes have a description


_TAG: Final = re.compile(
    r"</?(?:a|b|blockquote|br|code|dd|div|dl|dt|em|font|h[1-6]|hr|i|li|ol|p|pre|s|small|span"
    r"|strong|sub|sup|table|tbody|td|th|thead|tr|u|ul)"
    r"(?:\s+[\w-]+\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'<>]+))*\s*/?>",  # name=value only: "<b and >"
    re.IGNORECASE,
)
_MD_ESCAPE: Final = re.compile(r"\\([!-/:-@\[-`{-~])")
_TYPOGRAPHY: Final = {"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-"}
_TYPOGRAPHIC: Final = re.compile("[‘’“”–—]")
_BULLET: Final = re.compile(r"^[ \t]*(?:[*+-]|\d{1,3}[.)])[ \t]+", re.MULTILINE)


@lru_cache(maxsize=8192)
def loose(text: str) -> str:
    """``text`` without what is formatting, not wording: HTML tags and entities, markdown
    escapes and list bullets, typographic quotes and dashes, runs of whitespace."""
    text = html.unescape(html.unescape(text))  # some old versions escape twice (&amp;lt;)
    text = _MD_ESCAPE.sub(r"\1", _TAG.sub("\n", text))
    text = _TYPOGRAPHIC.sub(lambda m: _TYPOGRAPHY[m.group()], unicodedata.normalize("NFKC", text))
    text = _BULLET.sub("", text)
    return " ".join(text.split())


# ---------------------------------------------------------------------- similarity


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Words that carry little of what an outcome measures: low weight in the similarity.
_STOP: Final = _wordset(
    "a an and any as at by during each for from in into its of on or over per than that the "
    "their to up using via was were which while who with within"
)
_FRAMING: Final = _wordset(
    "assessed assessment change baseline evaluated evaluation frequency incidence mean measure "
    "measured measurement number occurrence participant percentage proportion rate total"
)
_SYNONYMS: Final = dict.fromkeys(
    _wordset("patient patients subject subjects participants people"), "participant"
) | {"percent": "percentage"}
_WORD: Final = re.compile(r"[^\W_]+(?:[.,]\d+)*")
_UK_PIECES: Final = dict(  # haemoglobin, anaesthesia, oedema, diarrhoea: American spelling
    pair.split(">") for pair in _wordset("haem>hem anaem>anem paed>ped aesth>esth leukaem>leukem "
    "ischaem>ischem gynaec>gynec oedem>edem oesoph>esoph oestr>estr foet>fet rrhoea>rrhea "
    "pnoea>pnea coeli>celi")
)  # fmt: skip
_UK_SPELLING: Final = (
    (re.compile("|".join(sorted(_UK_PIECES, key=len, reverse=True))), lambda m: _UK_PIECES[m[0]]),
    (re.compile(r"(?<=\w)is(e|ed|es|ing|ation|ations)$"), r"iz\1"),  # randomised
    (re.compile(r"(?<=\w)ys(e|ed|es|ing)$"), r"yz\1"),  # analyse
    (re.compile(r"(?<=\w\w)our$"), "or"),  # tumour
)
_STOP_WEIGHT, _FRAMING_WEIGHT = 0.1, 0.4
_FUZZY_RATIO = 0.85  # a respelled word (typo fixed) still counts as the same word
# Where a measure's qualifiers start: "Pain intensity (VAS) as assessed by ..." -> "Pain intensity".
_QUALIFIER: Final = re.compile(
    r"\s*[(\[;]|\s(?:as|by|using|according to|measured|assessed|evaluated|graded|per|in the)\s"
)
# Below this measure similarity, no description can lift a pair to MATCH_THRESHOLD.
_MEASURE_FLOOR: Final = (MATCH_THRESHOLD - (1 - MEASURE_WEIGHT)) / MEASURE_WEIGHT


@dataclass(frozen=True, slots=True)
class _Words:
    """A text as the similarity sees it; computed once per text."""

    raw: tuple[str, ...]
    weights: Mapping[str, float]  # stemmed word -> weight, acronyms spelt out when the text can
    core: frozenset[str]  # a measure's stemmed words before its first qualifier
    pending: tuple[tuple[str, str, bool], ...]  # acronyms the text does not spell out: stem,
    # letters, in the core
    initials: frozenset[str]  # first letters of its words
    sequence: tuple[str, ...]  # its stemmed content words (weight 1), in order


def outcome_similarity(
    measure_a: str, description_a: str, measure_b: str, description_b: str
) -> float:
    """Outcome similarity, 0..1: measures (and descriptions, when both have one); the texts
    are :func:`loose` forms."""
    measure = _text_similarity(_analysed(measure_a, True), _analysed(measure_b, True))
    if not (description_a and description_b):
        return measure
    if measure < _MEASURE_FLOOR:
        return MEASURE_WEIGHT * measure
    da, db = _analysed(description_a, False), _analysed(description_b, False)
    return MEASURE_WEIGHT * measure + (1 - MEASURE_WEIGHT) * _text_similarity(da, db)


def _text_similarity(a: _Words, b: _Words) -> float:
    """Weighted word-set similarity: the mean of the Dice coefficient and containment (so that a
    qualifier added to a short measure keeps it close); 0 for two measures whose words were
    replaced (``_replaced``). In measures, a respelt word (a typo fixed) is the same word."""
    if not a.raw or not b.raw:
        return float(a.raw == b.raw)
    (weights_a, core_a, seq_a), (weights_b, core_b, seq_b) = _resolved(a, b), _resolved(b, a)
    only_a, only_b = weights_a.keys() - weights_b.keys(), weights_b.keys() - weights_a.keys()
    if core_a or core_b:  # measures
        respelled = _respelled(only_a, only_b)
        only_a, only_b = only_a - respelled, only_b - respelled
        replaced = _replaced(only_a, only_b, only_a & core_a, only_b & core_b)
        if replaced or _replaced_inside((seq_a, only_a), (seq_b, only_b)):
            return 0.0
    total_a, total_b = sum(weights_a.values()), sum(weights_b.values())
    kept_a = total_a - sum(weights_a[t] for t in only_a)
    kept_b = total_b - sum(weights_b[t] for t in only_b)
    return ((kept_a + kept_b) / (total_a + total_b) + max(kept_a / total_a, kept_b / total_b)) / 2


def _replaced(only_a: set[str], only_b: set[str], core_a: set[str], core_b: set[str]) -> bool:
    """Whether a measure's words were replaced, rather than added or dropped.

    Words only added ("health-related quality of life", "per RECIST 1.1") or a qualifier
    swapped ("(ITT)" -> "as assessed by the investigator") are a rewording. A number replaced
    ("12 weeks" -> "24 weeks"), or words of the measure's core (before any qualifier) replaced
    by others ("overall" -> "progression-free survival") make another measure.
    """
    if any(t[0].isdigit() for t in only_a) and any(t[0].isdigit() for t in only_b):
        return True
    core_a, core_b = core_a - _STOP, core_b - _STOP
    return bool(core_a and core_b and (core_a - _FRAMING or core_b - _FRAMING))


@lru_cache(maxsize=16384)
def _analysed(text: str, is_measure: bool) -> _Words:
    raw = tuple(_WORD.findall(text))
    # The core is a prefix of the text, so it is the first words of the text.
    in_core = len(_WORD.findall(_core(text))) if is_measure else 0
    weights: dict[str, float] = {}
    core: set[str] = set()
    pending, sequence = [], []
    for index, word in enumerate(raw):
        letters = _acronym(word)
        parts = (_expansion(letters, raw) if letters else None) or (word,)
        if letters and len(parts) == 1:
            pending.append((_stem(word), letters, index < in_core))
        for token in map(_stem, parts):
            weights[token] = _weight(token)
            sequence += [token] if weights[token] == 1.0 else []
            core.update([token] if index < in_core else [])
    initials = frozenset(word[0].lower() for word in raw)
    return _Words(
        raw, MappingProxyType(weights), frozenset(core), tuple(pending), initials, tuple(sequence)
    )


_Resolved = tuple[Mapping[str, float], frozenset[str], tuple[str, ...]]


def _resolved(text: _Words, other: _Words) -> _Resolved:
    """The text's weights, core and sequence once the acronyms ``other`` spells out are spelt
    out."""
    if not text.pending:
        return text.weights, text.core, text.sequence
    weights, core, spelt = dict(text.weights), set(text.core), {}
    for token, letters, in_core in text.pending:
        expansion = _expansion(letters, other.raw) if other.initials.issuperset(letters) else None
        if expansion:
            parts = [_stem(part) for part in expansion]
            weights.pop(token, None)
            core.discard(token)
            weights.update((part, _weight(part)) for part in parts)
            core.update(parts if in_core else ())
            spelt[token] = [part for part in parts if weights[part] == 1.0]
    sequence = tuple(part for token in text.sequence for part in spelt.get(token, (token,)))
    return weights, frozenset(core), sequence


def _replaced_inside(*sides: tuple[tuple[str, ...], set[str]]) -> bool:
    """Whether words of one measure stand where the other has words of its own, with the same
    words after them: "... of chronic illness therapy" -> "... of acute illness therapy".

    ``sides``: each measure's content words in order, and those the other measure lacks."""
    (seq_a, only_a), (seq_b, only_b) = sides
    opcodes = difflib.SequenceMatcher(None, seq_a, seq_b, autojunk=False).get_opcodes()
    for index, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        block_a, block_b = set(seq_a[i1:i2]), set(seq_b[j1:j2])
        # A word of its own on either side ("2 years" -> "12 years" where "2" occurs again).
        swapped = (block_a & only_a or block_b & only_b) and not block_a & block_b
        if tag == "replace" and swapped and any(op[0] == "equal" for op in opcodes[index:]):
            return True
    return False


def _core(measure: str) -> str:
    """The measure before its first qualifier, if anything that measures is left before it."""
    cut = _QUALIFIER.search(measure)
    core = measure[: cut.start()] if cut else measure
    return core if set(map(_stem, _WORD.findall(core))) - _STOP - _FRAMING else measure


def _weight(token: str) -> float:
    return _STOP_WEIGHT if token in _STOP else _FRAMING_WEIGHT if token in _FRAMING else 1.0


def _respelled(only_a: set[str], only_b: set[str]) -> set[str]:
    """Words of either side that are a word of the other side spelt differently."""
    found: set[str] = set()
    for word in only_a:
        for other in only_b:
            if word[0] == other[0] and _respelling(word, other):
                found.update((word, other))
    return found


@lru_cache(maxsize=65536)
def _respelling(word: str, other: str) -> bool:
    if len(word) < 5 or word[0] != other[0] or abs(len(word) - len(other)) > 2:
        return False
    if sorted(word) == sorted(other):  # letters swapped
        return True
    return difflib.SequenceMatcher(None, word, other).ratio() >= _FUZZY_RATIO


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """Lower case, one word for participants/patients/subjects, US spelling, no plural -s."""
    token = word.lower()
    # "patinets" is still "patients": a misspelt synonym is the synonym.
    synonym = next((k for k in _SYNONYMS if k == token or _respelling(token, k)), token)
    token = _SYNONYMS.get(synonym, token)
    if len(token) > 5:
        for pattern, replacement in _UK_SPELLING:
            token = pattern.sub(replacement, token)
    if token.endswith("ies") and len(token) > 4:
        return token[:-3] + "y"
    if token.endswith("s") and len(token) > 3 and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


@lru_cache(maxsize=16384)
def _acronym(word: str) -> str | None:
    """The lower-case letters of an acronym ("PFS", "AEs", "QoL"), or None."""
    core = word[:-1] if word.endswith("s") else word
    if not (2 <= len(core) <= 8 and core.isalpha() and sum(c.isupper() for c in core) >= 2):
        return None
    return core.lower()


def _expansion(letters: str, words: tuple[str, ...]) -> tuple[str, ...] | None:
    """The first run of ``words`` whose initials spell ``letters`` (inner stop words skipped)."""
    for start, word in enumerate(words):
        if word[0].lower() != letters[0] or word.lower() in _STOP:
            continue
        used, end = 0, start
        while used < len(letters) and end < len(words):
            initial, lower = words[end][0].lower(), words[end].lower()
            if initial == letters[used]:
                used += 1
            elif lower not in _STOP:
                break
            end += 1
        if used == len(letters) and words[end - 1].lower() not in _STOP:
            return words[start:end]
    return None
