"""The shape of the package: layers that do not import Flask, no import cycles,
no state looked up for a path that was not checked first."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ltfsee_globus"

#: Everything below the web API: the stager process and the CLI run on these.
CORE = [
    "config",
    "eeadm",
    "parse",
    "paths",
    "placement",
    "lookup",
    "staging",
    "store",
    "prefetch",
    "stager",
    "metrics",
    "services",
    "health",
    "cli",
    "sim.library",
    "sim.cli",
]


def test_the_core_imports_without_flask():
    code = (
        "import sys\n"
        "for name in ('flask', 'flask_caching', 'werkzeug'):\n"
        "    sys.modules[name] = None  # importing it now raises ImportError\n"
        f"for name in {CORE!r}:\n"
        "    __import__('ltfsee_globus.' + name)\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout == "ok\n", res.stderr


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Modules of the package that `path` imports, at module level or in a function."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found |= {
            c
            for c in candidates
            if (PACKAGE.parent / c.replace(".", "/")).with_suffix(".py").exists()
        }
    return found - {me}


def test_no_import_cycles():
    graph = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}
    state: dict[str, str] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    # the walk sees relative imports at every depth
    assert "ltfsee_globus.paths" in graph["ltfsee_globus.api.globus"]
    assert "ltfsee_globus.api.context" in graph["ltfsee_globus.app"]
    assert "ltfsee_globus.app" in graph["ltfsee_globus"]
    assert cycles == []


STORE = PACKAGE / "store"
#: The engines, the only modules that may name a database driver.
ENGINE_MODULES = {"sqlite.py", "postgres.py", "postgres_changes.py"}


def drivers_imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in ("sqlite3", "psycopg")}
    return found


def test_no_database_row_leaves_the_store():
    """Only the engine modules talk to a driver; the role modules' public
    methods return records, dicts or scalars, never a driver's row or cursor
    (whose column names would become everyone's interface)."""
    leaking, roles = [], 0
    for path in STORE.glob("*.py"):
        if path.name in ENGINE_MODULES:
            continue
        assert drivers_imported(path) == set(), path.name
        if path.name == "db.py":  # the plumbing the roles run SQL through
            continue
        for cls in (n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)):
            for f in cls.body:
                if isinstance(f, ast.FunctionDef) and not f.name.startswith("_"):
                    roles += 1
                    returns = ast.unparse(f.returns or ast.Constant(None))
                    if any(d in returns for d in ("sqlite3", "psycopg", "Cursor", "Row")):
                        leaking.append(f"{path.name}:{cls.name}.{f.name}")
    assert roles > 40 and leaking == []
    outside = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if drivers_imported(p) and p.parent != STORE and "sim" not in p.parts
    ]
    # conninfo parses connection strings and opens none; pgcluster is the demo's
    # and the tests' throwaway server, which it sets up as the superuser
    assert sorted(outside) == ["conninfo.py", "pgcluster.py"]


def test_the_store_has_no_room_nobody_wants_to_live_in():
    """No module of the store over ~400 lines, no class over 300."""
    long_modules = {
        p.name: n for p in STORE.glob("*.py") if (n := len(p.read_text().splitlines())) > 400
    }
    long_classes = {}
    for path in STORE.glob("*.py"):
        for cls in (n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)):
            if (size := cls.end_lineno - cls.lineno + 1) > 300:
                long_classes[f"{path.name}:{cls.name}"] = size
    assert (long_modules, long_classes) == ({}, {})


def _called(call: ast.Call) -> str:
    """`lookup.fetch` for svc.lookup.fetch(...), `require_file` for require_file(...)."""
    f = call.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        owner = f.value.attr if isinstance(f.value, ast.Attribute) else getattr(f.value, "id", "")
        return f"{owner}.{f.attr}"
    return ""


def test_every_state_lookup_follows_a_path_check():
    """A cached state on disk answers a poll with no second path check
    (staging.poll), which is sound only while every state in the cache was
    looked up after its path passed require_file: each function that looks a
    state up calls require_file before it (current_state is such a lookup)."""
    lookups = {"lookup.fetch", "lookup.state", "current_state"}
    seen = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, ast.FunctionDef) or fn.name == "current_state":
                continue
            calls = [(n.lineno, _called(n)) for n in ast.walk(fn) if isinstance(n, ast.Call)]
            checks = [line for line, name in calls if name == "require_file"]
            for line, name in calls:
                if name in lookups:
                    seen += 1
                    assert checks and min(checks) < line, f"{path.name}:{line} {name} unchecked"
    assert seen >= 3  # the poll, file_state and archiveinfo
