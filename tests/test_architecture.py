"""The dependency rules of docs/ARCHITECTURE.md, checked on the source (AST only, nothing imported).

(a) a module imports only its own layer or those below (the "Layers" table of ARCHITECTURE.md,
    parsed here so the two cannot drift);
(b) imports of Tunery's own modules sit at module top, except in ``cli/`` (which imports workflows
    lazily so ``tunery --help`` answers without torch) and the few documented lazy imports below;
(c) no import cycle (module-level imports and the lazy ones that stay lazy);
(d) workflows do not import each other, except the edges listed with their reason.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = SRC / "tunery"
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"

ENTRY = "__main__"  # `python -m tunery`: above every layer
ROOT = ""  # tunery/__init__.py (the version): below every layer

# (b) function-level imports that stay lazy on purpose: importer -> imported -> reason.
LAZY_IMPORTS: dict[tuple[str, str], str] = {
    ("tunery.webui.app", "tunery.webui.tab_chat"): "the tabs import gradio (optional extra); build_app checks it first",
    ("tunery.webui.app", "tunery.webui.tab_jobs"): "the tabs import gradio (optional extra); build_app checks it first",
    ("tunery.webui.app", "tunery.webui.tab_train"): "the tabs import gradio (optional extra); build_app checks it first",
    ("tunery.webui.app", "tunery.webui.chat_session"): "imported with the tabs, after the gradio check",
    ("tunery.webui.app", "tunery.webui.runner"): "imported with the tabs, after the gradio check",
    ("tunery.webui.app", "tunery.webui.ui_state"): "imported with the tabs, after the gradio check",
    ("tunery.api.server", "tunery.api.app"): "the app imports fastapi (optional extra); serve() checks it first",
    ("tunery.config", "tunery.config.training_args"): "transformers' TrainingArguments: only commands that train load it",
}

# (d) workflow -> workflow imports that are part of a documented contract.
WORKFLOW_EDGES: dict[tuple[str, str], str] = {
    ("train", "inference"): "train --do_predict hands the trained model to inference.predict.run_predict",
    ("demo", "train"): "tunery demo fine-tunes through train.workflow.run_train, like tunery train",
}

# Known violations in code other branches are rewriting; removed when the faces/train branches merge.
# Each entry must still occur (the test says when one can go): rule, importer, imported.
PENDING: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool
    type_only: bool  # under `if TYPE_CHECKING:`


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if MODULES[importer].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def imports_of(name: str) -> list[Import]:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                module = _resolve(name, child)
                # `from tunery.data import cache` imports the module tunery.data.cache
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in child.names]
            else:
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)),
                      type_only or (isinstance(child, ast.If) and _is_type_checking(child.test)))
                continue
            for target in dict.fromkeys(targets):
                if target == "tunery" or target.startswith("tunery."):
                    found.append(Import(name, target, child.lineno, in_function, type_only))

    visit(tree, False, False)
    return found


ALL_IMPORTS = [imp for name in MODULES for imp in imports_of(name)]


def package_of(module: str) -> str:
    """``tunery.data.loader`` -> ``data``; ``tunery.demo`` -> ``demo``; ``tunery`` -> the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def read_layers() -> dict[str, int]:
    """Package -> rank from the "Layers" table of ARCHITECTURE.md (the first row is the highest)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = re.search(r"^## Layers[^\n]*\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "docs/ARCHITECTURE.md has no '## Layers' section"
    rows = [line for line in section.group(1).splitlines() if line.startswith("|")][2:]  # header, ruler
    assert rows, "the Layers section has no table rows"
    layers: dict[str, int] = {}
    for index, row in enumerate(rows):
        cells = [c.strip() for c in row.strip("|").split("|")]
        rank = len(rows) - index
        for package in re.findall(r"`([^`]+)`", cells[1]):
            package = package.strip("/").removesuffix(".py")
            assert package not in layers, f"{package} is listed in two layers"
            layers[package] = rank
    layers[ENTRY] = len(rows) + 1
    layers[ROOT] = 0
    return layers


LAYERS = read_layers()
WORKFLOWS = {p for p, rank in LAYERS.items() if rank == LAYERS["train"]}


def _report(found: set[tuple[str, str, str]], rule: str, explain: dict[tuple[str, str, str], str]) -> list[str]:
    """Violations of ``rule`` not in PENDING, as readable lines."""
    return [explain[key] for key in sorted(found) if key not in PENDING]


def test_layers_table_is_read():
    assert LAYERS["cli"] > LAYERS["train"] > LAYERS["data"] > LAYERS["hub"] > LAYERS[ROOT]
    assert LAYERS["webui"] == LAYERS["api"] == LAYERS["cli"]
    assert {"train", "inference", "evaluation", "export", "demo"} <= WORKFLOWS


def test_imports_go_down_the_layers():
    problems = []
    for imp in ALL_IMPORTS:
        src, dst = package_of(imp.importer), package_of(imp.imported)
        for package in (src, dst):
            if package not in LAYERS:
                problems.append(f"{MODULES[imp.importer]}:{imp.line}: package '{package}' is not in the Layers "
                                "table of docs/ARCHITECTURE.md")
        if src in LAYERS and dst in LAYERS and LAYERS[dst] > LAYERS[src]:
            problems.append(f"{MODULES[imp.importer]}:{imp.line}: {imp.importer} ({src}) imports {imp.imported} "
                            f"({dst}), a higher layer")
    assert not problems, "\n".join(problems)


def _lazy_violations() -> tuple[set[tuple[str, str, str]], dict]:
    found, explain = set(), {}
    for imp in ALL_IMPORTS:
        if not imp.in_function or package_of(imp.importer) == "cli":
            continue
        if (imp.importer, imp.imported) in LAZY_IMPORTS:
            continue
        key = ("lazy", imp.importer, imp.imported)
        found.add(key)
        explain[key] = (f"{MODULES[imp.importer]}:{imp.line}: `{imp.imported}` is imported inside a function; "
                        "import it at module top (lazy only for an optional heavy dependency, listed in LAZY_IMPORTS)")
    return found, explain


def test_tunery_imports_are_at_module_top():
    found, explain = _lazy_violations()
    problems = _report(found, "lazy", explain)
    assert not problems, "\n".join(problems)


def test_lazy_imports_listed_here_still_exist():
    lazy = {(i.importer, i.imported) for i in ALL_IMPORTS if i.in_function}
    stale = [f"{a} -> {b}" for a, b in LAZY_IMPORTS if (a, b) not in lazy]
    assert not stale, "no longer lazy; remove from LAZY_IMPORTS: " + ", ".join(stale)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components with more than one module or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    out.append(sorted(component))
    return out


def test_strongly_connected_finds_cycles():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"a"}, "b": set()}) == [["a"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    """Module-level imports plus the lazy ones that stay lazy (cli/, LAZY_IMPORTS): a lazy import
    must not hide a cycle either. TYPE_CHECKING imports never run and do not count."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in ALL_IMPORTS:
        if imp.type_only or imp.imported not in MODULES or ("lazy", imp.importer, imp.imported) in PENDING:
            continue
        graph[imp.importer].add(imp.imported)
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _workflow_violations() -> tuple[set[tuple[str, str, str]], dict]:
    found, explain = set(), {}
    for imp in ALL_IMPORTS:
        src, dst = package_of(imp.importer), package_of(imp.imported)
        if src != dst and src in WORKFLOWS and dst in WORKFLOWS and (src, dst) not in WORKFLOW_EDGES:
            key = ("workflow", imp.importer, imp.imported)
            found.add(key)
            explain[key] = (f"{MODULES[imp.importer]}:{imp.line}: workflow {src} imports workflow {dst}; "
                            "move the shared part down a layer, or list the edge in WORKFLOW_EDGES with its reason")
    return found, explain


def test_workflows_do_not_import_each_other():
    found, explain = _workflow_violations()
    problems = _report(found, "workflow", explain)
    assert not problems, "\n".join(problems)


def test_pending_list_holds_only_live_violations():
    """When a branch fixes an entry of PENDING, the entry goes too (this list only shrinks)."""
    live = _lazy_violations()[0] | _workflow_violations()[0]
    stale = sorted(PENDING - live)
    assert not stale, "fixed; remove from PENDING in tests/test_architecture.py:\n" + "\n".join(map(str, stale))


def test_unit_tests_mirror_the_source_packages():
    """tests/unit/<package>/ for each package of src/tunery; tests/unit/test_<module>.py for a root module."""
    unit = REPO / "tests" / "unit"
    problems = []
    for folder in sorted(p for p in unit.rglob("*") if p.is_dir() and p.name != "__pycache__"):
        if not (PACKAGE / folder.relative_to(unit)).is_dir():
            problems.append(f"{folder.relative_to(REPO)} has no package src/tunery/{folder.relative_to(unit)}")
    for test in sorted(unit.glob("test_*.py")):
        if not (PACKAGE / f"{test.stem.removeprefix('test_')}.py").is_file():
            problems.append(f"{test.relative_to(REPO)} tests no root module of src/tunery: move it into its package")
    assert not problems, "\n".join(problems)
