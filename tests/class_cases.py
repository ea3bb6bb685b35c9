"""A labelled set of outcome-switching cases built from real ClinicalTrials.gov records.

Each case is a real record of ``../shared/data/ctgov/studies`` (the old version) and a copy
whose outcome lists were edited the way sponsors edit them (the new version), both
normalized, with the outcome classes a careful reader would assign and which measure became
which. ``bench/bench_classes.py`` scores ``mirror.record.classes.classify`` against it; the tests
check that it is deterministic and sound. The edits do not look at how the classifier works:

* rewording (one or two at once): an abbreviation expanded or contracted (with the long forms
  the real records define), a qualifier added or dropped, word order, punctuation and case,
  terminology (subjects -> participants, British -> American spelling), time-point wording
  ("at 12 weeks" -> "at Week 12"), a synonym ("adverse events" -> "side effects"), a duration
  in other units ("1 year" -> "12 months"); sometimes also a typo of the old version fixed;
* unrelated replacement: the outcome swapped for one of ANOTHER real record;
* hard negatives, labelled as a removal plus an addition: a term swapped for a sibling
  (overall -> progression-free survival, systolic -> diastolic, serious -> treatment-related
  adverse events), or the time point in the measure changed (12 -> 24 weeks);
* time frame and description edits, demotion, promotion, primary/secondary swaps, additions,
  removals, mixes of these on different outcomes of one study, and no-ops (lists reordered,
  the old version in the HTML markup of old registry versions).

A quarter of the other cases also give the old version that HTML markup.
"""

from __future__ import annotations

import copy
import html
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from mirror.record import VersionClass, normalize

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ctgov" / "studies"
SEED = 20261206
ARROW = " => "
KINDS = ("primary", "secondary", "other")
_LISTS = {"primary": "primaryOutcomes", "secondary": "secondaryOutcomes", "other": "otherOutcomes"}

Label = tuple[str, str]  # class name, subject (see subject_of)
Outcome = dict[str, Any]


@dataclass(frozen=True)
class Case:
    case_id: str
    kind: str
    nct_id: str
    old: dict[str, Any]  # canonical records
    new: dict[str, Any]
    expected: frozenset[Label]


def subject_of(found: VersionClass) -> str:
    """Which outcome a class is about: its measure, or "old => new" for a matched pair."""
    params, what = found.params, found.name.rsplit(".", 1)[-1]
    if what == "reworded":
        return f"{params['from_measure']}{ARROW}{params['to_measure']}"
    if what == "demoted":
        return f"{params['measure']}{ARROW}{params['to_measure']}"
    if what == "promoted":
        return f"{params['from_measure']}{ARROW}{params['measure']}"
    return str(params["measure"])


def outcome_labels(found: list[VersionClass]) -> frozenset[Label]:
    return frozenset((c.name, subject_of(c)) for c in found if c.name.startswith("outcomes."))


def _rows(table: str) -> list[tuple[str, ...]]:
    """A small inline table: a row per line, cells separated by " / "."""
    return [tuple(line.split(" / ")) for line in table.strip().splitlines()]


def _cells(table: str) -> list[str]:
    return [cell for row in _rows(table) for cell in row]


# ---------------------------------------------------------------------------- the real records


@cache
def load_studies() -> tuple[dict[str, Any], ...]:
    return tuple(orjson.loads(path.read_bytes()) for path in sorted(DATA.glob("NCT*.json")))


def plain(text: str) -> str:
    """What a reader sees: no markup, entities or escapes; whitespace collapsed."""
    text = re.sub(r"</?(p|br|li|ul|b|i)\s*/?>", " ", html.unescape(html.unescape(text)))
    return " ".join(re.sub(r"\\([^\w\s])", r"\1", text).split())


@cache
def canonical_text(text: str) -> str:
    """A measure as ``normalize`` stores it (it cleans the markup of old versions)."""
    outcomes = {"primaryOutcomes": [{"measure": text}]}
    ident = {"nctId": "NCT00000000"}
    study = {"protocolSection": {"identificationModule": ident, "outcomesModule": outcomes}}
    return str(normalize(study)["outcomes.primary"][0]["measure"])


def words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9]+", plain(text).lower()))


def jaccard(a: str, b: str) -> float:
    wa, wb = words(a), words(b)
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


def abbreviates(text: str, other: str) -> bool:
    """Whether an abbreviation in ``text`` ("OS", "AEs") spells initials of words of ``other``."""
    kept = (w for w in re.findall(r"[a-z0-9]+", plain(other).lower()) if w not in _SMALL)
    initials = "".join(w[0] for w in kept)
    for word in re.findall(r"\b[A-Za-z]{2,8}\b", plain(text)):
        core = word[:-1] if word.endswith("s") else word
        if sum(c.isupper() for c in core) >= 2 and core.lower() in initials:
            return True
    return False


_SMALL = frozenset(_cells("of / and / the / in"))
# Words two unrelated measures may share.
COMMON = _SMALL | frozenset(
    _cells("""
with / to / for / at / by / a / on / or / per / as / from / after / time / total / score / rate
number / percentage / participants / patients / change / baseline
""")
)


@dataclass
class Pool:
    """Outcomes of all records, and the abbreviations the records define."""

    outcomes: dict[str, list[tuple[str, Outcome]]]  # kind -> (nct id, outcome)
    abbreviations: dict[str, str]  # "PFS" -> "Progression-free survival"

    def other_outcome(self, rng: random.Random, kind: str, nct_id: str) -> Outcome:
        while True:
            owner, outcome = rng.choice(self.outcomes[kind if kind != "other" else "secondary"])
            if owner != nct_id:
                return copy.deepcopy(outcome)


_DEFINITION = re.compile(r"((?:[A-Za-z][\w'-]*[ -]){1,6}?)\(\s*([A-Z][A-Za-z]{1,7})\s*\)")


def build_pool(studies: tuple[dict[str, Any], ...]) -> Pool:
    outcomes: dict[str, list[tuple[str, Outcome]]] = {kind: [] for kind in KINDS}
    defined: dict[str, Counter[str]] = {}
    for study in studies:
        nct_id = study["protocolSection"]["identificationModule"]["nctId"]
        for kind, items in _outcome_lists(study).items():
            for item in (item for item in items if item.get("measure")):
                outcomes[kind].append((nct_id, item))
                for long, short in _definitions(item["measure"]):
                    defined.setdefault(short, Counter())[long] += 1
    abbreviations = {short: longs.most_common(1)[0][0] for short, longs in defined.items()}
    return Pool(outcomes, abbreviations)


def _definitions(text: str) -> Iterator[tuple[str, str]]:
    """("Overall survival", "OS") for each "Overall survival (OS)" whose initials fit."""
    for match in _DEFINITION.finditer(text):
        long_words = re.findall(r"[A-Za-z]+", match.group(1))
        short = match.group(2)[:-1] if match.group(2).endswith("s") else match.group(2)
        tail = long_words[-len(short) :] if len(long_words) >= len(short) else []
        if tail and "".join(w[0] for w in tail).lower() == short.lower():
            yield " ".join(tail), match.group(2)


def _outcome_lists(study: dict[str, Any]) -> dict[str, list[Outcome]]:
    module = study["protocolSection"].get("outcomesModule", {})
    return {kind: module.get(name, []) for kind, name in _LISTS.items()}


# ---------------------------------------------------------------------------- rewording

SUFFIXES = _cells("""
(safety) / as assessed by the investigator / in the intention-to-treat population
measured by central laboratory / - primary analysis / (per-protocol population)
according to RECIST v1.1 / graded by CTCAE v5.0 / (efficacy)
""")
HEADS = _cells("Incidence / Duration / Severity / Frequency / Rate / Time")
TERMS: dict[str, str] = {
    old: new
    for old, new in _rows("""
subjects / participants
Subjects / Participants
patients / participants
Patients / Participants
tumour / tumor
haemoglobin / hemoglobin
oedema / edema
randomised / randomized
randomisation / randomization
anaemia / anemia
behaviour / behavior
paediatric / pediatric
centre / center
haematolog / hematolog
oesophag / esophag
""")
}
SYNONYMS = _rows("""
adverse events / side effects
mortality / death
renal / kidney
hepatic / liver
cardiac / heart
efficacy / effectiveness
pain intensity / pain severity
myocardial infarction / heart attack
length of stay / duration of hospitalization
relapse / recurrence
improvement / amelioration
blood sugar / blood glucose
""")
UNITS = _rows("""
1 year / 12 months
2 years / 24 months
24 hours / 1 day
6 months / 24 weeks
1 month / 4 weeks
48 hours / 2 days
""")
Edit = Callable[[str, random.Random, Pool], str | None]
REWORDINGS: list[Edit] = []


def rewording(edit: Edit) -> Edit:
    REWORDINGS.append(edit)
    return edit


@rewording
def expand_abbreviation(text: str, rng: random.Random, pool: Pool) -> str | None:
    found = [w for w in re.findall(r"\b[A-Z][A-Za-z]{1,7}\b", text) if w in pool.abbreviations]
    if not found:
        return None
    short = rng.choice(found)
    long = pool.abbreviations[short]
    if long.lower() in text.lower():
        return None
    replacement = f"{long} ({short})" if rng.random() < 0.5 else long
    return re.sub(rf"\b{short}\b", replacement, text, count=1)


@rewording
def contract_abbreviation(text: str, rng: random.Random, pool: Pool) -> str | None:
    matches = list(_DEFINITION.finditer(text))
    if not matches:
        return None
    match = rng.choice(matches)
    kept = match.group(2) if rng.random() < 0.5 else match.group(1).strip()
    return text[: match.start()] + kept + text[match.end() :]


@rewording
def add_qualifier(text: str, rng: random.Random, pool: Pool) -> str | None:
    if rng.random() < 0.3 and not text.lower().startswith("change"):
        return "Change from baseline in " + text[0].lower() + text[1:]
    return text.rstrip(". ") + " " + rng.choice(SUFFIXES)


_QUALIFIERS = _cells(r"""
\s*\([^()]{3,}\)
,?\s+(?:as )?(?:assessed|measured|evaluated) by .*$
,?\s+(?:according to|using|per) .*$
^Change from [Bb]aseline in
""")


@rewording
def drop_qualifier(text: str, rng: random.Random, pool: Pool) -> str | None:
    for pattern in _QUALIFIERS:
        shorter = re.sub(pattern, "", text, count=1).strip()
        if shorter != text and len(shorter) > 8:
            return shorter[0].upper() + shorter[1:]
    return None


@rewording
def reorder_words(text: str, rng: random.Random, pool: Pool) -> str | None:
    for separator in (": ", " - "):
        if text.count(separator) == 1:
            first, second = text.split(separator)
            return f"{second}{separator}{first}"
    head = re.match(rf"^({'|'.join(HEADS)}) of (.+)$", text, flags=re.IGNORECASE)
    if head:
        return f"{head.group(2)[0].upper()}{head.group(2)[1:]} {head.group(1).lower()}"
    both = re.match(r"^(\w+(?: \w+)?) and (\w+(?: \w+)?)$", text)
    return f"{both.group(2)} and {both.group(1)}" if both else None


@rewording
def punctuation_or_case(text: str, rng: random.Random, pool: Pool) -> str | None:
    choice = rng.randrange(4)
    if choice == 0 and re.search(r"[a-z]-[a-z]", text):
        return re.sub(r"([a-z])-([a-z])", r"\1 \2", text, count=1)
    if choice == 1:
        titled = " ".join(w if w.isupper() else w.capitalize() for w in text.split(" "))
        return titled if titled != text else text[0] + text[1:].lower()
    if choice == 2 and ", " in text:
        return text.replace(", ", " ", 1)
    return text[:-1] if text.endswith(".") else text + "."


@rewording
def terminology(text: str, rng: random.Random, pool: Pool) -> str | None:
    hits = [old for old in TERMS if re.search(rf"\b{old}", text)]
    hits += [new for new in TERMS.values() if re.search(rf"\b{new}", text)]
    if not hits:
        return None
    word = rng.choice(hits)
    replacement = TERMS.get(word) or next(k for k, v in TERMS.items() if v == word)
    return re.sub(rf"\b{word}", replacement, text, count=1)


@rewording
def time_point_wording(text: str, rng: random.Random, pool: Pool) -> str | None:
    """ "at 12 weeks" <-> "at Week 12"."""
    if match := re.search(r"\b(\d+)[ -](week|month|day|year)s?\b", text, flags=re.I):
        point = f"{match.group(2).capitalize()} {match.group(1)}"
    elif match := re.search(r"\b(Week|Month|Day) (\d+)\b", text):
        point = f"{match.group(2)} {match.group(1).lower()}s"
    else:
        return None
    return text[: match.start()] + point + text[match.end() :]


@rewording
def synonym(text: str, rng: random.Random, pool: Pool) -> str | None:
    """A word or phrase replaced by a synonym ("adverse events" -> "side effects")."""
    for pair in rng.sample(SYNONYMS, len(SYNONYMS)):
        for word, other in (pair, pair[::-1]):
            if re.search(rf"\b{word}\b", text, flags=re.I):
                return str(_swap_all({"measure": text}, rf"\b{word}\b", other)["measure"])
    return None


@rewording
def unit_conversion(text: str, rng: random.Random, pool: Pool) -> str | None:
    """A duration in other units ("1 year" -> "12 months")."""
    for pair in UNITS:
        for duration, other in (pair, pair[::-1]):
            if re.search(rf"\b{duration}\b", text, flags=re.I):
                return re.sub(rf"\b{duration}\b", other, text, count=1, flags=re.I)
    return None


def reword(text: str, rng: random.Random, pool: Pool) -> str | None:
    """One or two realistic rewordings of ``text`` that change what a reader sees."""
    steps, result = 1 if rng.random() < 0.7 else 2, text
    for edit in rng.sample(REWORDINGS, len(REWORDINGS)):
        changed = edit(result, rng, pool)
        if changed and plain(changed) != plain(result) and len(changed) > 3:
            result, steps = changed, steps - 1
            if steps == 0:
                break
    return result if plain(result) != plain(text) else None


def typo(text: str, rng: random.Random) -> str | None:
    """``text`` with two letters of one long word swapped (the old version's typo)."""
    long_words = list(re.finditer(r"\b[a-z]{7,}\b", text))
    if not long_words:
        return None
    match = rng.choice(long_words)
    i = rng.randrange(match.start() + 1, match.end() - 2)
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


# ---------------------------------------------------------------------------- hard negatives

SIBLINGS = _rows("""
overall survival / progression-free survival / disease-free survival / event-free survival
relapse-free survival / metastasis-free survival / overall survival
serious adverse events / treatment-related adverse events / treatment-emergent adverse events
adverse events of special interest / serious adverse events
complete response / partial response
complete remission / relapse
systolic / diastolic
LDL cholesterol / HDL cholesterol / triglycerides
Cmax / AUC / half-life
first / second
left / right
upper / lower
anxiety / depression
sensitivity / specificity
knee / hip / shoulder
intraoperative / postoperative / preoperative
pain / fatigue / nausea
inpatient / outpatient
acute / chronic
mortality / hospital readmission
sleep quality / daytime sleepiness
blood pressure / heart rate
success / failure
incidence / severity
insulin / glucose
recurrence / wound infection
weight / waist circumference
""")
TIME_UNIT = r"(?:weeks?|months?|days?|years?|hours?|cycles?)"


def sibling_swap(item: Outcome, rng: random.Random) -> Outcome | None:
    """The measure (and description) with one term swapped for a sibling term."""
    for group in rng.sample(SIBLINGS, len(SIBLINGS)):
        for term in group:
            # "(AUC)" abbreviates the words before it: swapping it alone would make nonsense.
            if re.search(rf"(?<![(\[])\b{re.escape(term)}\b(?![)\]])", item["measure"], re.I):
                other = rng.choice([t for t in group if t != term])
                if other.lower() not in item["measure"].lower():  # not "first and first"
                    return _swap_all(item, rf"\b{re.escape(term)}\b", other)
    return None


def time_point_swap(item: Outcome, rng: random.Random) -> Outcome | None:
    """The time point named in the measure changed ("at 12 weeks" -> "at 24 weeks")."""
    text = item["measure"]
    match = re.search(rf"\b(\d+)(?=[ -]{TIME_UNIT}\b)|\b(?:Week|Month|Day) (\d+)\b", text)
    if not match:
        return None
    group = 1 if match.group(1) else 2
    number = int(match.group(group))
    other = rng.choice([n for n in (4, 6, 8, 12, 16, 24, 26, 48, 52, 104) if n != number])
    swapped = dict(item, measure=text[: match.start(group)] + str(other) + text[match.end(group) :])
    if rng.random() < 0.5 and item.get("timeFrame"):
        swapped["timeFrame"] = re.sub(rf"\b{number}\b", str(other), item["timeFrame"])
    return swapped


def _swap_all(item: Outcome, pattern: str, replacement: str) -> Outcome:
    """``pattern`` replaced in the measure and description; an "(ABBR)" that no longer fits
    the words before it is dropped."""

    def case_like(match: re.Match[str]) -> str:
        found = match.group(0)
        return replacement[0].upper() + replacement[1:] if found[0].isupper() else replacement

    measure = re.sub(pattern, case_like, item["measure"], flags=re.I)
    fitting = {short for _, short in _definitions(measure)}
    measure = re.sub(
        r"\s*\(\s*([A-Z][A-Za-z]{1,7})\s*\)", lambda m: m[0] if m[1] in fitting else "", measure
    )
    swapped = dict(item, measure=measure)
    if "description" in item:
        swapped["description"] = re.sub(pattern, case_like, item["description"], flags=re.I)
    return swapped


# ---------------------------------------------------------------------------- building cases


@dataclass
class Slot:
    """One outcome across the two versions (None: absent from that version)."""

    old_kind: str | None
    old: Outcome | None
    new_kind: str | None
    new: Outcome | None
    touched: bool = False

    @property
    def old_measure(self) -> str:
        return str(self.old.get("measure", "")) if self.old else ""


@dataclass
class Draft:
    nct_id: str
    slots: list[Slot]
    rng: random.Random
    pool: Pool
    labels: set[tuple[str, tuple[str, ...]]] = field(default_factory=set)  # name, measures

    def pick(self, kind: str, twinned: bool = False) -> Slot | None:
        """An untouched outcome of ``kind`` whose measure no other outcome shares (with
        ``twinned``, one with a near-identical sibling: "Grade 3" beside "Grade 4")."""
        texts = [s.old["measure"] for s in self.slots if s.old]
        counts = Counter(map(words, texts))
        free = [s for s in self.slots if s.old_kind == kind and not s.touched and s.old_measure]
        free = [s for s in free if counts[words(s.old_measure)] == 1]
        if twinned:
            free = [s for s in free if any(0.6 <= jaccard(s.old_measure, t) < 1 for t in texts)]
        return self.rng.choice(free) if free else None

    def others(self, besides: Slot | None = None) -> list[str]:
        """The measures of both versions, but for those of ``besides``."""
        slots = [s for s in self.slots if s is not besides]
        return [s.old["measure"] for s in slots if s.old] + [
            s.new["measure"] for s in slots if s.new
        ]

    def fresh(self, measure: str, unrelated_to: str | None = None) -> bool:
        """No outcome of either version is close to ``measure`` (nor to ``unrelated_to``)."""
        if unrelated_to is not None and (
            (words(measure) & words(unrelated_to)) - COMMON
            or abbreviates(measure, unrelated_to)
            or abbreviates(unrelated_to, measure)
        ):
            return False
        return all(jaccard(t, measure) < 0.6 for t in self.others())

    def label(self, name: str, *measures: str) -> None:
        self.labels.add((name, measures))

    def expected(self) -> frozenset[Label]:
        return frozenset(
            (name, ARROW.join(canonical_text(m) for m in measures))
            for name, measures in self.labels
        )


def _reword_slot(draft: Draft, kind: str, with_time: bool = False, twinned: bool = False) -> bool:
    slot = draft.pick(kind, twinned)
    if slot is None or slot.new is None or slot.old is None:
        return False
    text = reword(slot.new["measure"], draft.rng, draft.pool)
    # A rewording that says what another outcome says would make the labels doubtful.
    if text is None or any(words(t) == words(text) for t in draft.others(besides=slot)):
        return False
    if draft.rng.random() < 0.15 and (misspelt := typo(slot.old["measure"], draft.rng)):
        slot.old["measure"] = misspelt
    slot.new["measure"], slot.touched = text, True
    draft.label(f"outcomes.{kind}.reworded", slot.old["measure"], text)
    if draft.rng.random() < 0.3 and slot.new.get("description"):
        described = reword(slot.new["description"], draft.rng, draft.pool)
        slot.new["description"] = described or slot.new["description"]
    if with_time:
        slot.new["timeFrame"] = retime(slot.new.get("timeFrame"), draft)
        draft.label(f"outcomes.{kind}.timeframe_changed", text)
    return True


def retime(frame: str | None, draft: Draft) -> str:
    """A new time frame: a number changed, a time point added, a rephrasing, or another's."""
    rng, choice, edited = draft.rng, draft.rng.randrange(4), None
    numbers = re.findall(r"\d+", frame or "")
    if frame and choice == 0 and numbers:
        edited = frame.replace(numbers[0], str(int(numbers[0]) * rng.choice((2, 3)) or 12), 1)
    elif frame and choice == 1:
        edited = rng.choice(("Baseline, ", "From baseline to ", "Up to ")) + frame
    elif frame and choice == 2:
        edited = frame.rstrip(". ") + rng.choice((", and at end of study", " and 12 months"))
    while edited is None or plain(edited) == plain(frame or ""):
        edited = draft.pool.other_outcome(rng, "primary", draft.nct_id).get("timeFrame")
    return edited


def _retime_slot(draft: Draft, kind: str) -> bool:
    slot = draft.pick(kind)
    if slot is None or slot.new is None:
        return False
    slot.new["timeFrame"], slot.touched = retime(slot.new.get("timeFrame"), draft), True
    draft.label(f"outcomes.{kind}.timeframe_changed", slot.new["measure"])
    return True


NOTES = _cells("""
Assessed by an independent central review committee.
Participants who discontinue early are counted as non-responders.
Missing values are imputed by last observation carried forward.
""")


def _describe_slot(draft: Draft, kind: str) -> bool:
    slot = draft.pick(kind)
    if slot is None or slot.new is None:
        return False
    text = slot.new.get("description", "")
    sentences = re.split(r"(?<=\.) ", text)
    if len(sentences) > 2 and draft.rng.random() < 0.4:
        slot.new["description"] = " ".join(sentences[:-1])
    else:
        slot.new["description"] = (text + " " + draft.rng.choice(NOTES)).strip()
    slot.touched = True
    draft.label(f"outcomes.{kind}.description_changed", slot.new["measure"])
    return True


def _replace_slot(draft: Draft, kind: str, hard: bool = False) -> bool:
    slot = draft.pick(kind)
    if slot is None or slot.new is None or slot.old is None:
        return False
    item = _hard_negative(draft, slot.new) if hard else _unrelated(draft, slot.old)
    if item is None or any(words(t) == words(item["measure"]) for t in draft.others()):
        return False
    if not hard and not draft.fresh(item["measure"]):
        return False
    slot.new, slot.new_kind, slot.touched = None, None, True
    draft.slots.append(Slot(None, None, kind, item, touched=True))
    draft.label(f"outcomes.{kind}.removed", slot.old["measure"])
    draft.label(f"outcomes.{kind}.added", item["measure"])
    return True


def _unrelated(draft: Draft, old: Outcome) -> Outcome | None:
    for _ in range(20):
        item = draft.pool.other_outcome(draft.rng, "primary", draft.nct_id)
        if draft.fresh(item["measure"], unrelated_to=old["measure"]):
            return item
    return None


def _hard_negative(draft: Draft, item: Outcome) -> Outcome | None:
    makers = [sibling_swap, time_point_swap]
    for make in draft.rng.sample(makers, len(makers)):
        if (made := make(item, draft.rng)) and plain(made["measure"]) != plain(item["measure"]):
            return made
    return None


def _move_slot(draft: Draft, source: str, target: str) -> bool:
    slot = draft.pick(source)
    if slot is None or slot.new is None or slot.old is None:
        return False
    slot.new_kind, slot.touched = target, True
    if draft.rng.random() < 0.25 and (text := reword(slot.new["measure"], draft.rng, draft.pool)):
        slot.new["measure"] = text
    name = "demoted" if source == "primary" else "promoted"
    draft.label(f"outcomes.primary.{name}", slot.old["measure"], slot.new["measure"])
    return True


def _add_slot(draft: Draft, kind: str) -> bool:
    item = draft.pool.other_outcome(draft.rng, kind, draft.nct_id)
    if not draft.fresh(item["measure"]):
        return False
    draft.slots.append(Slot(None, None, kind, item, touched=True))
    draft.label(f"outcomes.{kind}.added", item["measure"])
    return True


def _drop_slot(draft: Draft, kind: str) -> bool:
    slot = draft.pick(kind)
    if slot is None or slot.old is None:
        return False
    slot.new, slot.new_kind, slot.touched = None, None, True
    draft.label(f"outcomes.{kind}.removed", slot.old["measure"])
    return True


def _secondary_or_other(draft: Draft) -> str:
    return draft.rng.choice(("secondary", "secondary", "secondary", "other"))


Step = Callable[[Draft], bool]
STEPS: dict[str, Step] = {
    "reword_primary": lambda d: _reword_slot(d, "primary"),
    "reword_secondary": lambda d: _reword_slot(d, "secondary"),
    "reword_retime_primary": lambda d: _reword_slot(d, "primary", with_time=True),
    "reword_twinned": lambda d: _reword_slot(d, d.rng.choice(KINDS[:2]), twinned=True),
    "retime_primary": lambda d: _retime_slot(d, "primary"),
    "retime_secondary": lambda d: _retime_slot(d, "secondary"),
    "describe_primary": lambda d: _describe_slot(d, "primary"),
    "replace_primary": lambda d: _replace_slot(d, "primary"),
    "replace_secondary": lambda d: _replace_slot(d, "secondary"),
    "hard_negative_primary": lambda d: _replace_slot(d, "primary", hard=True),
    "hard_negative_secondary": lambda d: _replace_slot(d, "secondary", hard=True),
    "demote": lambda d: _move_slot(d, "primary", _secondary_or_other(d)),
    "promote": lambda d: _move_slot(d, _secondary_or_other(d), "primary"),
    "add_primary": lambda d: _add_slot(d, "primary"),
    "drop_primary": lambda d: _drop_slot(d, "primary"),
}
# Kind of case -> how many, and the steps each applies (all must apply; mixed: 2 or 3 at random).
PLAN: dict[str, tuple[int, tuple[str, ...]]] = {
    "reword_primary": (50, ("reword_primary",)),
    "reword_secondary": (25, ("reword_secondary",)),
    "reword_retime_primary": (20, ("reword_retime_primary",)),
    "reword_twinned": (20, ("reword_twinned",)),
    "retime_primary": (25, ("retime_primary",)),
    "retime_secondary": (10, ("retime_secondary",)),
    "describe_primary": (15, ("describe_primary",)),
    "replace_primary": (35, ("replace_primary",)),
    "replace_secondary": (15, ("replace_secondary",)),
    "hard_negative_primary": (50, ("hard_negative_primary",)),
    "hard_negative_secondary": (20, ("hard_negative_secondary",)),
    "demote": (30, ("demote",)),
    "promote": (25, ("promote",)),
    "swap": (20, ("demote", "promote")),
    "add_primary": (10, ("add_primary",)),
    "drop_primary": (10, ("drop_primary",)),
    "noop_reorder": (15, ()),
    "noop_markup": (20, ()),
    "mixed": (45, ()),
}
MIXABLE = tuple(name for name in STEPS if name not in ("reword_retime_primary", "reword_twinned"))


def build_cases(seed: int = SEED) -> list[Case]:
    """The labelled set: PLAN's cases, drawn from the real records with ``seed``."""
    rng = random.Random(seed)
    studies = load_studies()
    pool = build_pool(studies)
    usable = [s for s in studies if any(_outcome_lists(s).values())]
    cases: list[Case] = []
    for kind, (count, steps) in PLAN.items():
        made = 0
        while made < count:
            case = _make_case(kind, steps, rng.choice(usable), rng, pool, made)
            if case is not None:
                cases.append(case)
                made += 1
    return cases


def _make_case(
    kind: str, steps: tuple[str, ...], study: dict[str, Any], rng: random.Random, pool: Pool, n: int
) -> Case | None:
    nct_id = study["protocolSection"]["identificationModule"]["nctId"]
    slots = [
        Slot(k, copy.deepcopy(item), k, copy.deepcopy(item))
        for k, items in _outcome_lists(study).items()
        for item in items
    ]
    if kind == "mixed":
        steps = tuple(rng.sample(MIXABLE, rng.choice((2, 2, 3))))
    if kind == "noop_markup" or (not kind.startswith("noop") and rng.random() < 0.25):
        for slot in slots:
            slot.old = _marked_up(slot.old, rng) if slot.old else None
    draft = Draft(nct_id, slots, rng, pool)
    if not all(STEPS[step](draft) for step in steps):
        return None
    old, new = _versions(study, draft.slots, rng, shuffle=kind == "noop_reorder")
    return Case(f"{kind}-{n:03d}", kind, nct_id, old, new, draft.expected())


def _marked_up(item: Outcome, rng: random.Random) -> Outcome:
    """The outcome as old registry versions serve it: HTML entities, <p>, <br/>."""

    def mark(text: str) -> str:
        escaped = html.escape(text, quote=False).replace("\n", "<br/>\n")
        escaped = escaped.replace("/", "&#x2F;") if rng.random() < 0.5 else escaped
        return f"<p>{escaped}</p>" if rng.random() < 0.5 else escaped + "  "

    return {key: mark(value) if isinstance(value, str) else value for key, value in item.items()}


def _versions(
    study: dict[str, Any], slots: list[Slot], rng: random.Random, shuffle: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    versions = []
    for side in ("old", "new"):
        lists: dict[str, list[Outcome]] = {kind: [] for kind in KINDS}
        for slot in slots:
            item, kind = getattr(slot, side), getattr(slot, f"{side}_kind")
            if item is not None and kind is not None:
                lists[kind].append(item)
        edited = copy.deepcopy(study)
        module = edited["protocolSection"].setdefault("outcomesModule", {})
        for kind, items in lists.items():
            if shuffle and side == "new":
                rng.shuffle(items)
            module.pop(_LISTS[kind], None)
            if items:
                module[_LISTS[kind]] = items
        versions.append(normalize(edited, ignore=["derived.*"]))
    return versions[0], versions[1]
