"""Rules: which study versions are worth a message, by their change classes' parameters.

A rule is a change-class glob followed by conditions on that class's parameters
(docs/notifications.md has the whole language; docs/classes.md lists the classes)::

    enrollment.* |percent| >= 20%
    dates.slipped date = primary_completion and shift_days >= 30 days
    major                                   (any class whose "major" is true)
    status.stopped

A version passes a rule when one of its classes matches the glob and satisfies every
condition. The language is parsed here into data and evaluated by comparing values: there is
no ``eval``, no attribute access, nothing but the operators below. A rule is checked against
the class catalog when it is added, so a misspelt class or parameter is refused then.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from mirror.errors import UsageError
from mirror.record import CATALOG, class_matches

MAX_RULE_LENGTH = 500
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<op>>=|<=|==|!=|=|>|<)
      | (?P<abs>\|[A-Za-z_][A-Za-z0-9_]*\|)
      | (?P<quoted>"[^"]*"|'[^']*')
      | (?P<number>[-+]?\d+(?:\.\d+)?(?:%|days?\b|d\b)?(?![\w.-]))
      | (?P<word>[^\s"'<>=!|]+)
    )""",
    re.VERBOSE,
)
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
    "=": operator.eq, "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
_UNITS = {"%": "percent", "days": "days", "day": "days", "d": "days"}
_NUMBER_UNIT = re.compile(r"([-+]?\d+(?:\.\d+)?)(%|days?|d)?")
_DATE = re.compile(r"\d{4}(?:-\d\d){0,2}")
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


class RuleError(UsageError):
    """A rule that cannot be read, or that no change class could ever satisfy."""

    def __init__(self, rule: str, problem: str) -> None:
        super().__init__(f"rule {rule!r}: {problem} (see docs/notifications.md, 'Rules')")


@dataclass(frozen=True)
class Condition:
    param: str
    op: str
    value: Any  # a number, a string, True/False or None
    absolute: bool = False  # |param|: compare the magnitude

    def holds(self, params: Mapping[str, Any]) -> bool:
        found = params.get(self.param)
        if isinstance(found, list):  # a list parameter (countries, fields) "= x" means "has x"
            if self.op in ("=", "==", "!="):
                has = any(_equal(item, self.value) for item in found)
                return has if self.op != "!=" else not has
            return False
        if self.op in ("=", "==", "!="):
            same = _equal(found, self.value)
            return same if self.op != "!=" else not same
        if _is_number(found) and _is_number(self.value):
            return _OPS[self.op](abs(found) if self.absolute else found, self.value)
        if isinstance(found, str) and isinstance(self.value, str):  # dates read as ISO text
            return _OPS[self.op](found, self.value)
        return False

    def __str__(self) -> str:
        name = f"|{self.param}|" if self.absolute else self.param
        if self.param == "major" and self.op == "=" and self.value is True:
            return "major"
        return f"{name} {self.op} {_literal(self.value)}"


@dataclass(frozen=True)
class Rule:
    """A parsed rule: a class glob and the conditions its parameters must meet."""

    pattern: str
    conditions: tuple[Condition, ...]

    def matches(self, classes: Iterable[Mapping[str, Any]]) -> bool:
        """Whether some class (``{"name": …, **params}``) passes the rule."""
        return any(
            class_matches(self.pattern, str(found.get("name", "")))
            and all(c.holds(found) for c in self.conditions)
            for found in classes
        )

    def __str__(self) -> str:
        conditions = " and ".join(str(c) for c in self.conditions)
        return f"{self.pattern} {conditions}" if conditions else self.pattern


def parse_rule(text: str) -> Rule:
    """Read and check one rule; RuleError (a usage error) says what is wrong with it."""
    if len(text) > MAX_RULE_LENGTH:
        raise RuleError(text[:40] + "…", f"longer than {MAX_RULE_LENGTH} characters")
    tokens = _tokens(text)
    if not tokens:
        raise RuleError(text, "empty: give a change class, e.g. 'status.stopped'")
    pattern = "*"
    if tokens[0][0] == "word" and re.search(r"[.*?]", tokens[0][1]):
        pattern = tokens.pop(0)[1]
    catalog = [info for info in CATALOG if class_matches(pattern, info.name)]
    if not catalog:
        raise RuleError(text, f"no change class matches {pattern!r} (docs/classes.md lists them)")
    params = {name for info in catalog for name in info.params}
    conditions = []
    while tokens:
        condition, tokens = _condition(text, tokens)
        if condition.param not in params:
            known = ", ".join(sorted(params)) or "none"
            problem = f"{pattern} has no parameter {condition.param!r} (it has: {known})"
            raise RuleError(text, problem)
        conditions.append(condition)
    return Rule(pattern, tuple(conditions))


def parse_rules(texts: Sequence[str]) -> list[Rule]:
    return [parse_rule(text) for text in texts]


def passes(rules: Sequence[Rule], classes: Sequence[Mapping[str, Any]]) -> bool:
    """No rules pass everything; else a version passes when any one rule matches it."""
    return not rules or any(rule.matches(classes) for rule in rules)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, at = [], 0
    stripped = text.rstrip()
    while at < len(stripped):
        match = _TOKEN.match(stripped, at)
        if match is None or match.end() == at:
            raise RuleError(text, f"cannot read {stripped[at:].strip()[:20]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match[kind]))
        at = match.end()
    return tokens


def _condition(text: str, tokens: list[tuple[str, str]]) -> tuple[Condition, list[tuple[str, str]]]:
    """The first condition of ``tokens`` and the tokens after it (and a joining "and")."""
    if tokens[0] == ("word", "and"):
        tokens = tokens[1:]
        if not tokens:
            raise RuleError(text, "'and' must be followed by a condition")
    kind, word = tokens[0]
    if (kind, word) == ("word", "major") and (len(tokens) == 1 or tokens[1][0] != "op"):
        return Condition("major", "=", True), tokens[1:]
    if kind not in ("word", "abs") or not re.fullmatch(r"\|?[A-Za-z_]\w*\|?", word):
        raise RuleError(text, f"expected a parameter name, found {word!r}")
    if len(tokens) < 2 or tokens[1][0] != "op":
        raise RuleError(text, f"{word} must be followed by an operator (>=, <=, >, <, =, !=)")
    param, absolute = word.strip("|"), kind == "abs"
    if len(tokens) < 3:
        raise RuleError(text, f"{param} needs a value after its operator")
    value, rest = _value(text, param, tokens[2:])
    op = tokens[1][1]
    if op not in ("=", "==", "!=") and not (_is_number(value) or _DATE.fullmatch(str(value))):
        raise RuleError(text, f"{op} compares numbers or dates (YYYY-MM-DD), not {_literal(value)}")
    if absolute and not _is_number(value):
        raise RuleError(text, f"|{param}| compares with a number")
    return Condition(param, "=" if op == "==" else op, value, absolute), rest


Tokens = list[tuple[str, str]]  # (kind, text)


def _value(text: str, param: str, tokens: Tokens) -> tuple[Any, Tokens]:
    kind, word = tokens[0]
    rest = tokens[1:]
    if kind == "number":
        digits, unit = _NUMBER_UNIT.fullmatch(word).groups()  # type: ignore[union-attr]
        if not unit and rest and rest[0][0] == "word" and rest[0][1] in _UNITS:
            unit, rest = rest[0][1], rest[1:]
        if unit:
            _check_unit(text, param, unit)
        return float(digits) if "." in digits else int(digits), rest
    if kind == "quoted":
        return word[1:-1], rest
    if kind == "word" and word != "and":
        return _LITERALS.get(word.lower(), word), rest
    raise RuleError(text, f"{param} needs a value after its operator")


def _check_unit(text: str, param: str, unit: str) -> None:
    wanted = _UNITS[unit]
    if wanted not in param:
        raise RuleError(text, f"{unit!r} does not fit {param} (it is not a number of {wanted})")


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(found: Any, wanted: Any) -> bool:
    if isinstance(found, str) and isinstance(wanted, str):
        return found.casefold() == wanted.casefold()
    if _is_number(found) and _is_number(wanted):
        return bool(found == wanted)
    return found is wanted if isinstance(wanted, bool) or wanted is None else False


def _literal(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, str):
        bare = _tokens(value) == [("word", value)] and value.lower() not in {*_LITERALS, "and"}
        return value if bare else (f'"{value}"' if '"' not in value else f"'{value}'")
    return repr(value)
