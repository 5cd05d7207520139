"""The layout ARCHITECTURE.md describes: imports flow one way, the bootstrap engine knows no kind of
model, and importing jaxmm changes no JAX setting."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxmm"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """jaxmm module -> the jaxmm modules it imports at module level (relative imports resolved)."""
    graph: dict[str, set[str]] = {}
    modules = {_module(p) for p in PACKAGE.rglob("*.py")}
    for path in PACKAGE.rglob("*.py"):
        name = _module(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.parse(path.read_text()).body:  # module level only: lazy imports inside functions are fine
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                    )
                submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                candidates = submodules or [base]  # `from . import display` imports display, not the package
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            found |= {c for c in candidates if c in modules and c != name}
        graph[name] = found
    return graph


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert len(graph) > 20  # the walk saw the package


def test_the_bootstrap_engine_and_results_know_no_kind_of_model():
    graph = _imports()
    kinds = {"jaxmm.lmm", "jaxmm.glmm", "jaxmm.glmm.model", "jaxmm.glmm.laplace", "jaxmm.deviance", "jaxmm.models"}
    for module in ("jaxmm.bootstrap.engine", "jaxmm.bootstrap.api", "jaxmm.results", "jaxmm.replicates", "jaxmm.io"):
        assert not graph[module] & kinds, (module, graph[module] & kinds)
    assert not any(
        "isinstance" in line and "LinearMixedModel" in line
        for p in (PACKAGE / "bootstrap").glob("*.py")
        for line in p.read_text().splitlines()
    )


def test_importing_jaxmm_changes_no_jax_setting(tmp_path):
    code = (
        "import jax; before = (jax.config.jax_compilation_cache_dir, jax.config.jax_enable_x64); "
        "import jaxmm; after = (jax.config.jax_compilation_cache_dir, jax.config.jax_enable_x64); "
        "assert before == after, (before, after); "
        "m = jaxmm.fit('yield ~ 1 + (1|batch)', jaxmm.dataset('dyestuff')); "
        "print(jax.config.jax_compilation_cache_dir, jax.config.jax_enable_x64)"
    )
    env = {**os.environ, "JAXMM_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    # the cache is switched on by jaxmm's first computation; float64 stays jaxmm's own
    assert out.split() == [str(tmp_path / "cache"), "False"]


def test_import_and_the_command_lines_help_load_no_numerical_library():
    """`import jaxmm`, `jaxmm --help` and `jaxmm --version` import neither JAX, SciPy nor pandas: the
    names load when first used. (Their times are measured in bench/bench_import.py.)"""
    code = (
        "import sys, jaxmm; from jaxmm.cli import main; "
        "codes = [main(['--version']), main(['--help'])]; "
        "print(codes, sorted(m for m in ('jax', 'scipy', 'pandas', 'matplotlib') if m in sys.modules)); "
        "jaxmm.fit; print('jax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-2:] == ["[0, 0] []", "True"]
