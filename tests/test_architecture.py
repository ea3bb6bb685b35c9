"""The house rules of docs/architecture.md that import-linter does not check: packages are used
through their stated surface, the top level stays small, modules stay readable."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import mirror

PACKAGE = Path(mirror.__file__).parent
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
TOP_LEVEL = {"__init__", "__main__", "app", "config", "errors", "logging"}
MAX_LINES = 600


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _package_of(path: Path) -> str | None:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else None


def _imports(path: Path) -> list[ast.ImportFrom]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]


def test_the_stage_subpackages_are_there() -> None:
    """mirror/ holds the stage subpackages of docs/architecture.md."""
    stages = ["record", "store", "source", "pipeline", "feed", "render", "export", "notify"]
    stages.append("daemon")
    assert sorted([*stages, "serve", "cli"]) == SUBPACKAGES


def test_the_top_level_keeps_only_the_shared_modules() -> None:
    """Only config, errors, logging, app and the entry points live beside the subpackages."""
    assert {p.stem for p in PACKAGE.glob("*.py")} == TOP_LEVEL


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_states_its_public_names(name: str) -> None:
    """``__all__`` lists exactly the names the package's ``__init__`` imports, and each exists."""
    package = importlib.import_module(f"mirror.{name}")
    stated = set(package.__all__)
    imported = {
        a.asname or a.name for n in _imports(PACKAGE / name / "__init__.py") for a in n.names
    }
    assert stated == imported
    assert all(hasattr(package, attr) for attr in stated)


def test_other_packages_import_only_the_stated_names() -> None:
    """Outside a subpackage, its modules are reached through ``mirror.<package>`` only."""
    wrong = []
    for path in _modules():
        own = _package_of(path)
        for node in _imports(path):
            parts = node.module.split(".") if node.module else []
            if parts[:1] != ["mirror"] or len(parts) < 2 or parts[1] not in SUBPACKAGES:
                continue
            if parts[1] == own or path.name == "__main__.py":
                continue
            where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
            if len(parts) > 2:
                wrong.append(f"{where} imports from {node.module}")
                continue
            public = set(importlib.import_module(node.module).__all__)
            wrong += [f"{where} imports {a.name}" for a in node.names if a.name not in public]
    assert wrong == []


def test_no_module_is_too_long_to_read() -> None:
    """Every module of mirror/ stays under MAX_LINES lines."""
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_loggers_come_from_mirror_logging() -> None:
    """structlog is imported by mirror.logging alone, on the first line logged (start-up)."""
    direct = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "structlog" for name in names):
                direct.append(str(path.relative_to(PACKAGE)))
    assert direct == ["logging.py"]
