"""The library's house rules, read from its import graph (every import, those inside functions too):
rooms stacked in floors with imports only going down, no cycle, training and evaluation free of the
synthesis stack, a short ground floor, and no Prefect or orchestration code below flows/ and tasks/."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "embedfactory"

# Lowest first. A module imports from its own floor or the floors below it. The ground floor is every
# module at the package's top (config, ids, store, schemas, ...) and the prompts and data folders.
FLOORS = ["ground", "llm", "eval", "filter", "report", "publish", "synth", "training", "align", "__main__"]
SYNTHESIS = {"llm", "filter", "synth", "align"}  # what training and evaluation must not reach
MAX_FLAT = 10


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def room(module: str) -> str:
    parts = module.split(".") + [""]
    return "__main__" if parts[1] == "__main__" else parts[1] if parts[1] in FLOORS else "ground"


def imports(module: str) -> set[str]:
    """The package's modules that `module` imports, anywhere in its code."""
    path = MODULES[module]
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            names = [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            target, names = "", [a.name for a in node.names]
        else:
            continue
        for name in names:
            name = name if name in MODULES else target
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_has_a_floor_and_imports_only_its_own_or_lower_floors():
    upward = [f"{m} ({room(m)}) -> {t} ({room(t)})" for m, targets in GRAPH.items() for t in targets
              if FLOORS.index(room(t)) > FLOORS.index(room(m))]
    assert not upward, upward
    top = sorted({m.split(".")[1] for m in MODULES if m.count(".") >= 1 and (PACKAGE / m.split(".")[1]).is_dir()})
    assert set(top) <= set(FLOORS) | {"prompts", "data"}, top


def test_no_import_cycles():
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                on.discard(w)
                component.append(w)
            on.discard(v)
            if component:
                cycles.append(sorted(component + [v]))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def closure(start: list[str]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += GRAPH[m]
    return seen


def test_training_and_evaluation_reach_nothing_of_synthesis():
    for floor in ("training", "eval"):
        reached = {m for m in closure([m for m in MODULES if room(m) == floor]) if room(m) in SYNTHESIS}
        assert not reached, (floor, sorted(reached))


def test_a_short_ground_floor():
    flat = sorted(m for m, p in MODULES.items() if m.count(".") == 1 and p.parent == PACKAGE
                  and p.name != "__init__.py")
    assert len(flat) <= MAX_FLAT, flat


def test_the_library_knows_nothing_of_prefect_flows_or_tasks():
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not any(n.split(".")[0] in ("prefect", "flows", "tasks") for n in names), (module, names)


def test_the_graph_reader_sees_imports_inside_functions():
    """The rules above would pass on an empty graph: pin a few edges the reader must find."""
    assert "embedfactory.eval.sets" in GRAPH["embedfactory.synth.documents"]  # a function-level import
    assert "embedfactory.filter.gates" in GRAPH["embedfactory.synth.personas"]
    assert "embedfactory.training.trainer" in GRAPH["embedfactory.training.launch"]
    assert room("embedfactory.config") == "ground" and room("embedfactory.prompts") == "ground"
    assert room("embedfactory.synth.pipeline") == "synth" and room("embedfactory.__main__") == "__main__"
