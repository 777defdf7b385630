"""The layering rules of docs/architecture.md, read from the import statements."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mmf_rec"

# docs/architecture.md's module map: the layer of each top-level name in mmf_rec
LAYERS = {
    "compat": 0, "errors": 0, "files": 0, "paths": 0, "log": 0, "auc": 0,
    "imagenet": 0, "text_model": 0, "structured_config": 0,
    "schema": 1, "data": 1, "processors": 1, "metrics": 1, "ranking_metrics": 1,
    "train_speed": 1, "summary": 1,
    "encoders": 2, "interaction": 2, "knowledge_cache": 2, "safe_load": 2,
    "models": 3,
    "trainer": 4, "checkpoint": 4, "run_results": 4, "run_dir": 4, "distributed": 4,
    "sharding": 4, "resume": 4, "predict": 4, "zoo": 4, "runs": 4,
    "retrieval": 5, "serving": 5, "evaluation": 5, "benchmark": 5, "explain": 5, "bench": 5,
    "plugin": 6, "registrations": 6,
}
# the two calls that run up on purpose (see docs/architecture.md)
UPWARD = {("mmf_rec", "mmf_rec.registrations"), ("mmf_rec.runs", "mmf_rec.plugin")}
READERS = ("synthetic", "movielens", "hm", "criteo", "custom")
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """Every mmf_rec module a file imports, at any depth of its code."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mmf_rec":
                yield from (f"mmf_rec.{a.name}" for a in node.names)
            else:
                yield node.module


def _layer(module: str):
    parts = module.split(".")
    if parts[0] != "mmf_rec":
        return None
    return 0 if len(parts) == 1 else LAYERS[parts[1]]


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _sources()}
    assert tops - {"__init__"} == set(LAYERS)


def test_imports_run_down():
    upward = []
    for path in _sources():
        me = _module_name(path)
        for target in _imports(path):
            layer = _layer(target)
            if layer is not None and layer > _layer(me) and (me, target) not in UPWARD:
                upward.append(f"{me} (layer {_layer(me)}) imports {target} (layer {layer})")
    assert upward == []


def test_compat_imports_nothing_else_of_mmf_rec():
    outside = [(p.name, t) for p in (PACKAGE / "compat").glob("*.py") for t in _imports(p)
               if t.startswith("mmf_rec") and not t.startswith("mmf_rec.compat")]
    assert outside == []


def test_no_reader_imports_another():
    def reader(module):
        name = module.rsplit(".", 1)[-1]
        return next((r for r in READERS if name == r or name.startswith(r + "_")), None)

    crossing = []
    for path in (PACKAGE / "data").glob("*.py"):
        mine = reader(_module_name(path))
        for target in _imports(path):
            theirs = reader(target) if target.startswith("mmf_rec.data.") else None
            if mine and theirs and theirs != mine:
                crossing.append((path.name, target))
    assert crossing == []


def test_no_module_over_the_line_limit():
    long = {str(p.relative_to(REPO)): n for p in _sources()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_tools_are_entry_points_and_tests_do_not_import_them():
    tools = {p.stem for p in (REPO / "tools").glob("*.py")}
    found = []
    for path in [*(REPO / "tools").glob("*.py"), *(REPO / "tests").rglob("*.py")]:
        text = path.read_text()
        if path.name != "test_layering.py":
            found += [(path.name, "sys.path")] if "sys.path" in text else []
            if "spec_from_file_location" in text and '"tools"' in text:
                found.append((path.name, "a tool loaded from its file"))
        found += [(path.name, t) for t in _imports(path) if t.split(".")[0] in tools]
    assert found == []
