"""The layering check: ``python -m gateway.tools.layering`` exits 1 when a module imports a
higher layer than its own, or when anything but the entry points imports the composition root.

The layers, lowest first (a module may import its own layer and any lower one):

    core        errors.py, core/            clock, ids, tasks, JSON, value parsers
    settings    settings.py                 the typed config and its secrets
    request     request/                    the request and response types, the chain, the record
    store       store/                      the store protocols and their backends
    observability observability/            metric and span names, telemetry, logs, SLOs, OTLP
    upstream    upstream/                   the terminal stage and its HTTP/1.1 transport
    stages      stages/                     the outbound stages (retry/, breaker/, budget, ...)
    inbound     inbound/                    the aiohttp middleware steps and the /v1 handler
    webhooks    webhooks/                   webhook ingress, queue and relay
    admin       admin/                      /_gateway/*: status, triage, metrics, dashboard
    process     app.py, serve.py, reload.py  composition, serving, reloading
    tools       tools/                      the commands that are tools: sim, demo, bench
    cli         cli.py                      the command line

Every import counts, those under ``if TYPE_CHECKING:`` and inside functions too: a cycle in
the types is still a cycle for the reader.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("gateway.errors", "gateway.core")),
    ("settings", ("gateway.settings",)),
    ("request", ("gateway.request",)),
    ("store", ("gateway.store",)),
    ("observability", ("gateway.observability",)),
    ("upstream", ("gateway.upstream",)),
    ("stages", ("gateway.stages",)),
    ("inbound", ("gateway.inbound",)),
    ("webhooks", ("gateway.webhooks",)),
    ("admin", ("gateway.admin",)),
    ("process", ("gateway.app", "gateway.serve", "gateway.reload")),
    ("tools", ("gateway.tools",)),
    ("cli", ("gateway.cli",)),
)
# The composition root is imported only by what starts a process.
ROOT_MODULE = "gateway.app"
ROOT_IMPORTERS = ("gateway.serve", "gateway.cli", "gateway.tools")
PACKAGE_ROOT = "gateway"  # the package itself (`gateway/__init__.py`) holds nothing to import


@dataclass(frozen=True, slots=True)
class Violation:
    path: str
    line: int
    importer: str
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported}: {self.why}"


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str, layers: Sequence[tuple[str, tuple[str, ...]]] = LAYERS) -> tuple[int, str] | None:
    best: tuple[int, int, str] | None = None
    for rank, (name, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if _within(module, prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank, name)
    return None if best is None else (best[1], best[2])


def _module_name(path: Path, source_root: Path) -> str:
    parts = list(path.relative_to(source_root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str, package: str) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                keep = len(base) - node.level + (1 if is_package else 0)
                target = ".".join(base[:keep] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not _within(target, package):
                continue
            for alias in node.names:  # `from gateway.x import y` may name the module gateway.x.y
                yield node.lineno, f"{target}.{alias.name}"


def _resolve(imported: str, known: set[str]) -> str:
    """The longest known module that ``imported`` names (``gateway.x.Name`` → ``gateway.x``)."""
    while imported and imported not in known:
        imported = imported.rpartition(".")[0]
    return imported


def check(
    source_root: Path,
    package: str = PACKAGE_ROOT,
    layers: Sequence[tuple[str, tuple[str, ...]]] = LAYERS,
    root_module: str = ROOT_MODULE,
    root_importers: Sequence[str] = ROOT_IMPORTERS,
) -> list[Violation]:
    """Every import under ``source_root/package`` that breaks the layering, and every module no
    layer claims (a new folder must be placed, not slip through)."""
    files = sorted((source_root / package).rglob("*.py"))
    modules = {_module_name(p, source_root): p for p in files}
    known = set(modules)
    violations: list[Violation] = []
    for module, path in modules.items():
        shown = str(path.relative_to(source_root))
        own = layer_of(module, layers)
        if own is None:
            if module != package:
                violations.append(Violation(shown, 1, module, "-", "no layer claims this module (add it to LAYERS)"))
            continue
        for line, raw in _imports(path, module, package):
            imported = _resolve(raw, known)
            if not imported or imported == package or _within(imported, module):
                continue
            theirs = layer_of(imported, layers)
            if theirs is not None and theirs[0] > own[0]:
                violations.append(
                    Violation(shown, line, module, imported, f"the {own[1]} layer may not import the {theirs[1]} layer above it")
                )
            if _within(imported, root_module) and not any(_within(module, m) for m in root_importers):
                violations.append(
                    Violation(shown, line, module, imported, f"only {', '.join(root_importers)} may import the composition root")
                )
    return violations


def main(argv: Sequence[str] | None = None) -> int:
    source_root = Path(argv[0]) if argv else Path(__file__).resolve().parents[2]
    violations = check(source_root)
    for violation in violations:
        print(violation)
    if violations:
        print(f"{len(violations)} layering violation(s); the layers are in gateway/tools/layering.py")
        return 1
    print(f"layering: {len(LAYERS)} layers, no violation")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
