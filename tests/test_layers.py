"""The house reads bottom-up: l2v_core (conversion, encoding, loading, training) stands on nothing of ours,
l2v_eval stands on l2v_core, and only the command lines (l2v_cli) join the two. Checked from the import
statements of every module (including imports inside functions) and from every file's text."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each package may import from the project's own packages.
ALLOWED = {"l2v_core": {"l2v_core"}, "l2v_eval": {"l2v_core", "l2v_eval"},
           "l2v_cli": {"l2v_core", "l2v_eval", "l2v_cli"}}


def imported_packages(path: Path, package: str) -> set[tuple[str, int]]:
    """(top-level package, line) of every import in ``path``, relative ones resolved within ``package``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add((package if node.level else (node.module or "").split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_layers_below_it(package):
    ours = set(ALLOWED)
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {name}"
             for path in sorted((ROOT / package).rglob("*.py"))
             for name, line in imported_packages(path, package)
             if name in ours and name not in ALLOWED[package]]
    assert not wrong, wrong


def test_the_checker_sees_a_wrong_import(tmp_path):
    planted = tmp_path / "m.py"
    planted.write_text("def f():\n    from l2v_eval.harness import EvalConfig\n")
    assert ("l2v_eval", 2) in imported_packages(planted, "l2v_core")


@pytest.mark.parametrize("package,others", [("l2v_core", ("l2v_eval", "l2v_cli")), ("l2v_eval", ("l2v_cli",))])
def test_no_file_of_a_lower_package_names_a_higher_one(package, others):
    """Recipes, templates and data included: a config must not point into another package's folder."""
    named = [str(path.relative_to(ROOT)) for path in sorted((ROOT / package).rglob("*"))
             if path.is_file() and path.suffix not in (".pyc", ".gz", ".safetensors", ".gguf")
             and any(other in path.read_text(encoding="utf-8", errors="replace") for other in others)]
    assert not named, named
