"""The house's layers: every import in `sgcache` runs downward, from the web
face and the admin command to the schema (docs/architecture.md).

Each module belongs to the unit of its longest listed prefix; a module may
import its own unit, or a unit of a lower layer. Two units of one layer
(store and site, read and sync, web and admin) do not import each other.
Imports inside functions count too. The emulator's read semantics are its
own: the emulator modules import nothing of `sgcache.read`.
"""

from __future__ import annotations

import ast
import os
import re
import sys

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: bottom first
LAYERS = [
    ["sgcache", "sgcache.logs"],
    ["sgcache.config", "sgcache.lifecycle"],
    ["sgcache.schema"],
    ["sgcache.store", "sgcache.site"],
    ["sgcache.read", "sgcache.sync"],
    ["sgcache.web", "sgcache.admin"],
    ["sgcache.schemakeeper", "sgcache.cluster"],
    ["sgcache.service"],
    ["sgcache.testing"],
    ["sgcache.demo"],
    ["sgcache.tap", "sgcache.plugincache"],
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}

#: the emulator: its own read semantics (it may share data-type names only)
EMULATOR = ["sgcache.testing.emulator", "sgcache.testing.engine", "sgcache.testing.filters",
            "sgcache.testing.eventlog", "sgcache.testing.server", "sgcache.testing.tap"]


def unit_of(module: str) -> str:
    best = "sgcache"
    for unit in RANK:
        if (module == unit or module.startswith(unit + ".")) and len(unit) > len(best):
            best = unit
    return best


def modules() -> dict[str, str]:
    """module name -> file, for every module of the sgcache package."""
    out = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "sgcache")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
            out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def imports(module: str, path: str) -> list[tuple[str, int]]:
    """(imported sgcache module, line) of every import in the file."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            # `from sgcache.x import y`: y may be a module of x
            out += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    known = modules()
    resolved = []
    for name, line in out:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name.startswith("sgcache"):
            resolved.append((name, line))
    return resolved


class LayerTests(unittest.TestCase):
    def test_every_module_has_a_layer(self) -> None:
        for module in modules():
            self.assertIn(unit_of(module), RANK, module)

    def test_imports_run_downward(self) -> None:
        wrong = []
        for module, path in sorted(modules().items()):
            unit = unit_of(module)
            for imported, line in imports(module, path):
                other = unit_of(imported)
                if other == unit or RANK[other] < RANK[unit]:
                    continue
                wrong.append(f"{os.path.relpath(path, ROOT)}:{line}: {module} ({unit}) imports {imported} ({other})")
        self.assertEqual(wrong, [], "imports against the layers:\n" + "\n".join(wrong))

    def test_the_emulator_has_its_own_read_semantics(self) -> None:
        wrong = []
        for module in EMULATOR:
            path = modules()[module]
            wrong += [f"{module} imports {imported}" for imported, _ in imports(module, path)
                      if unit_of(imported) == "sgcache.read"]
        self.assertEqual(wrong, [])

    def test_sql_only_in_the_store_and_the_planner(self) -> None:
        sql = re.compile(r"\b(SELECT|INSERT INTO|DELETE FROM|UPDATE \S+ SET|CREATE (UNIQUE )?(TABLE|INDEX))\b")
        wrong = []
        for module, path in sorted(modules().items()):
            if unit_of(module) in ("sgcache.store", "sgcache.read", "sgcache.testing"):
                continue
            text = open(path, encoding="utf-8").read()
            wrong += [f"{module}: {m.group(0)}" for m in sql.finditer(text)]
            if ".fetch(" in text:
                wrong.append(f"{module}: store.fetch")
        self.assertEqual(wrong, [])

    def test_declared_dependencies_are_those_imported(self) -> None:
        # distribution -> the module it is imported as
        module_of = {"twisted[tls]": "twisted", "psycopg2-binary": "psycopg2", "pyyaml": "yaml",
                     "zope.interface": "zope"}
        setup = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
        block = setup[setup.index("install_requires=["):setup.index("],", setup.index("install_requires=["))]
        declared = {re.split(r"[<>=]", req)[0] for req in re.findall(r'"([^"]+)"', block)}
        declared = {module_of.get(name, name) for name in declared}
        imported = set()
        for module, path in modules().items():
            tree = ast.parse(open(path, encoding="utf-8").read())
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                         else [])
                imported.update(n.split(".")[0] for n in names)
        third_party = {n for n in imported if n not in sys.stdlib_module_names and n != "sgcache"}
        self.assertEqual(declared, third_party)

    def test_no_private_names_imported_across_modules(self) -> None:
        wrong = []
        for module, path in sorted(modules().items()):
            tree = ast.parse(open(path, encoding="utf-8").read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("sgcache")):
                    wrong += [f"{module}:{node.lineno}: {alias.name}" for alias in node.names
                              if alias.name.startswith("_") and not alias.name.startswith("__")]
        self.assertEqual(wrong, [])

    def test_the_checker_sees_imports(self) -> None:
        # a guard for the test itself: it finds lazy and relative imports
        path = modules()["sgcache.tap"]
        self.assertIn("sgcache.demo", [name for name, _ in imports("sgcache.tap", path)])
