"""The packages of `bridge/` form layers: no import runs back up, so no two packages need each other.

A package here is a top-level unit of `bridge/`: a sub-package (`bridge/pipeline/`) or a module
(`bridge/decide.py`). Read from the source with `ast`, imports under `if TYPE_CHECKING:` included
(they tie the code together as much as any). Three checks: no cycle among modules, no cycle
among packages except the ones listed in KNOWN, each a debt with its reason (issue 15), and the
pipeline used only from above, through its face.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"

# Package cycles allowed, each with its reason: none. (The health monitor once named the
# cut-over's phase types while the controller filled its tables; it now takes plain PhaseReads.)
KNOWN: set[frozenset[str]] = set()

# The pipeline settles: it imports the brokers, the publisher and decide, never the other way
# round. What runs routes (the runner, the cut-over controller, the health monitor) uses it
# through RoutePipeline and its settings; its lanes, settling and sending are its own business.
PIPELINE_USERS = {"runner", "cutover", "operations"}
PIPELINE_FACE = {"bridge.pipeline", "bridge.pipeline.route", "bridge.pipeline.settings", "bridge.pipeline.stats"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(BRIDGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the bridge modules it imports (absolute imports; the project uses no relative ones)."""
    modules = {_module_name(path): path for path in BRIDGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: relative import"
                base = node.module or ""
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for named in targets:
                # `from bridge.x import y` names module bridge.x.y when that is a module, else bridge.x
                target = named
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("bridge") and target != name:
                    graph[name].add(target)
        graph.setdefault(name, set())
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_module_imports_itself_through_others() -> None:
    # bridge/__init__.py and a package's __init__ re-export their own modules: not a cycle of code.
    graph = {name: {t for t in targets if not name.endswith("__init__")} for name, targets in _imports().items()}
    for package in [name for name in graph if (BRIDGE.parent / name.replace(".", "/") / "__init__.py").exists()]:
        graph[package] = set()
    assert _cycles(graph) == []


def test_packages_form_layers() -> None:
    packages: dict[str, set[str]] = defaultdict(set)
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, targets in _imports().items():
        for target in targets:
            source, goal = _package(module), _package(target)
            if source not in (goal, "__init__"):
                packages[source].add(goal)
                edges[(source, goal)].append(module)
    cycles = [frozenset(component) for component in _cycles(dict(packages))]
    unknown = [component for component in cycles if component not in KNOWN]
    described = [
        {f"{a} -> {b} ({', '.join(sorted(set(edges[(a, b)])))})" for a in c for b in c if (a, b) in edges}
        for c in unknown
    ]
    assert unknown == [], described


def test_the_pipeline_is_used_only_from_above_and_only_through_its_face() -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in _imports().items()
        for target in targets
        if _package(target) == "pipeline"
        and _package(module) != "pipeline"
        and (_package(module) not in PIPELINE_USERS or target not in PIPELINE_FACE)
    )
    assert wrong == []


def test_the_layering_check_sees_a_cycle() -> None:
    """The check itself cannot pass vacuously: a made-up cycle is found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    graph = _imports()
    assert "bridge.decide" in graph["bridge.pipeline.intake"]
    assert "bridge.pipeline.route" in graph["bridge.runner"]
    assert "bridge.stored" in graph["bridge.jetstream.checkpoints"]
