"""Imports point one way. The ground floor (the shared vocabulary and helpers) imports nothing
else of recsim-ft; models, data and agents understand rows through ``recsim_ft.schema`` and never
reach an env module, directly or through the modules they import. Checked on the source with
``ast``, imports inside functions included."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

import recsim_ft

PACKAGE = Path(recsim_ft.__file__).parent
GROUND_FLOOR = (
    "recsim_ft._deprecation",
    "recsim_ft.checks",
    "recsim_ft.fileio",
    "recsim_ft.memory",
    "recsim_ft.metrics",
    "recsim_ft.progress",
    "recsim_ft.protocol",
    "recsim_ft.schema",
)


def module_file(name: str) -> Path | None:
    """The source file of recsim-ft module ``name``, None for anything else."""
    parts = name.split(".")
    if parts[0] != "recsim_ft":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _typing_only(tree: ast.Module) -> set[int]:
    """The ids of the nodes under ``if TYPE_CHECKING:``: imports for annotations only, which
    never run."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for inner in ast.walk(node)
    }


@functools.cache
def imported(name: str) -> set[str]:
    """The recsim-ft modules that module ``name`` imports anywhere in its source (but for
    annotations only)."""
    found = set()
    tree = ast.parse(module_file(name).read_text())
    skipped = _typing_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from package import name``: the submodule ``package.name`` when there is one
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            submodules = {m for m in submodules if module_file(m) is not None}
            found |= submodules or {node.module}
    return {m for m in found if module_file(m) is not None}


def import_chains(start: str) -> dict[str, list[str]]:
    """Every recsim-ft module reachable from ``start`` through imports, with one chain to it."""
    chains, todo = {start: [start]}, [start]
    while todo:
        name = todo.pop()
        for other in sorted(imported(name) - chains.keys()):
            chains[other] = chains[name] + [other]
            todo.append(other)
    return chains


def every_module() -> list[str]:
    """Every module of the package, subpackages included."""
    return sorted(
        ".".join(("recsim_ft", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        for p in PACKAGE.rglob("*.py")
    )


def modules_under(folder: str) -> list[str]:
    return sorted(
        f"recsim_ft.{folder}.{p.stem}".removesuffix(".__init__")
        for p in (PACKAGE / folder).glob("*.py")
    )


@pytest.mark.parametrize(
    "module",
    [m for folder in ("models", "data", "agents", "retrieval") for m in modules_under(folder)],
)
def test_models_data_agents_and_retrieval_never_reach_an_env_module(module):
    reached = {
        name: chain
        for name, chain in import_chains(module).items()
        if name.startswith("recsim_ft.envs")
    }
    assert not reached, "\n".join(" -> ".join(chain) for chain in reached.values())


@pytest.mark.parametrize("module", GROUND_FLOOR)
def test_the_ground_floor_imports_only_the_ground_floor(module):
    assert set(import_chains(module)) <= set(GROUND_FLOOR)


def test_the_check_sees_imports_inside_functions():
    # agents.bandits imports the trainer only inside OnlineTwoTowerAgent.refit
    assert "recsim_ft.train" in imported("recsim_ft.agents.bandits")
    assert "recsim_ft.envs.base" in import_chains("recsim_ft.online")


def test_no_module_reaches_itself():
    """No import circle. A module importing a package it belongs to (whose ``__init__`` names
    the package's public API) is not counted."""
    graph = {
        module: {other for other in imported(module) if not module.startswith(other + ".")}
        for module in every_module()
    }
    circles, finished = [], set()

    def visit(module: str, chain: list[str]) -> None:
        for other in sorted(graph.get(module, ())):
            if other in chain:
                circles.append(" -> ".join([*chain[chain.index(other) :], other]))
            elif other not in finished:
                visit(other, [*chain, other])
        finished.add(module)

    for module in graph:
        if module not in finished:
            visit(module, [module])
    assert not circles, "\n".join(circles)


def test_the_command_line_is_the_top_floor():
    """The library never imports its command line (``python -m recsim_ft`` runs it)."""
    importers = [
        module
        for module in every_module()
        if not module.startswith(("recsim_ft.cli", "recsim_ft.__main__"))
        and any(other.startswith("recsim_ft.cli") for other in imported(module))
    ]
    assert not importers
