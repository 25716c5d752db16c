"""The layering check passes on the gateway as it is, and fails on each kind of break."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.tools import layering

ROOT = Path(__file__).resolve().parents[3]


def test_the_gateway_keeps_its_layers() -> None:
    assert [str(v) for v in layering.check(ROOT)] == []


def test_the_command_exits_0_on_the_gateway() -> None:
    done = subprocess.run([sys.executable, "-m", "gateway.tools.layering"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "no violation" in done.stdout, done.stdout + done.stderr


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"gateway/__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_lower_layer_importing_a_higher_one_is_caught(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "gateway/core/__init__.py": "",
        "gateway/core/clock.py": "from gateway.stages.retry import stage\n",
        "gateway/stages/__init__.py": "",
        "gateway/stages/retry/__init__.py": "",
        "gateway/stages/retry/stage.py": "from gateway.core.clock import x\n",
    })
    found = layering.check(root)
    assert [(v.importer, v.imported) for v in found] == [("gateway.core.clock", "gateway.stages.retry.stage")]
    assert "the core layer may not import the stages layer" in str(found[0])


def test_relative_and_deferred_imports_count_too(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "gateway/request/__init__.py": "",
        "gateway/request/types.py": "def f():\n    from ..inbound import middleware\n",
        "gateway/inbound/__init__.py": "",
        "gateway/inbound/middleware.py": "",
    })
    assert [(v.importer, v.imported) for v in layering.check(root)] == [("gateway.request.types", "gateway.inbound.middleware")]


def test_only_the_entry_points_import_the_composition_root(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "gateway/app.py": "",
        "gateway/reload.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gateway.app import Components\n",
        "gateway/serve.py": "from gateway.app import build_app\n",
    })
    found = layering.check(root)
    assert [(v.importer, v.imported) for v in found] == [("gateway.reload", "gateway.app")]


def test_a_module_no_layer_claims_is_caught(tmp_path: Path) -> None:
    root = tree(tmp_path, {"gateway/helpers.py": ""})
    assert [v.importer for v in layering.check(root)] == ["gateway.helpers"]


def test_every_package_says_what_it_is_for_and_what_it_may_import() -> None:
    import ast

    silent = []
    for init in sorted((ROOT / "gateway").rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        says_imports = "May import" in doc or init.parent == ROOT / "gateway"
        if len(doc.splitlines()[0] if doc else "") < 20 or not says_imports:
            silent.append(str(init.relative_to(ROOT)))
    assert silent == []
