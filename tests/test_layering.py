"""The folders depend on each other in one direction: the runtime (rfsdk/) on none of the tools.

rfsdk/ is what `import rfsdk` and an app ship; convert/, train/, evaluation/, server/ and
cli/ (installed as rfsdk.convert, rfsdk.train, ...) build on it. Only cli/ holds command-line
code. Checked on the source, so an import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("rfsdk.train", "rfsdk.evaluation", "rfsdk.cli", "rfsdk.server")
HEAVY = ("torch", "transformers", "peft", "accelerate", "starlette", "uvicorn")


def _imports(path: Path, package: str) -> set[str]:
    """Absolute module names imported by ``path`` (a module of ``package``), relative imports resolved."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                names.add(f"{base}.{node.module}" if node.module else base)
            else:
                names.add(node.module or "")
    return names


def _modules(folder: str, package: str) -> list[tuple[Path, str]]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        relative = path.relative_to(ROOT / folder).with_suffix("")
        parts = [p for p in relative.parts if p != "__init__"]
        inner = ".".join([package, *parts[:-1]]) if path.name != "__init__.py" else ".".join([package, *parts])
        found.append((path, inner))
    return found


@pytest.mark.parametrize(("path", "package"), _modules("rfsdk", "rfsdk"), ids=lambda v: str(v))
def test_the_runtime_imports_no_tool_and_no_heavy_package(path: Path, package: str) -> None:
    bad = {name for name in _imports(path, package) if name.startswith(TOOLS) or name.split(".")[0] in HEAVY}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("folder", ["train", "evaluation", "convert", "server"])
def test_command_line_code_lives_in_cli(folder: str) -> None:
    for path, package in _modules(folder, f"rfsdk.{folder}"):
        uses = {name for name in _imports(path, package) if name in ("click", "argparse") or name.startswith("rfsdk.cli")}
        assert not uses, f"{path.relative_to(ROOT)} imports {sorted(uses)}: command-line code belongs in cli/"
