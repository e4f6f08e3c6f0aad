"""Regenerate the committed betterproto2 code in rds_csi/gen from proto/csi.proto.

    python -m rds_csi.gen.regenerate           # rewrite the generated modules in place
    python -m rds_csi.gen.regenerate --check   # exit 1, with a summary, if they are stale

The code is committed so that installing and importing rds-csi needs no compiler. This
script keeps it honest: it always generates into a fresh temporary directory first, then
either swaps the generated parts in (leaving the hand-written `__init__.py` and this file
alone) or compares them with what is committed.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "GEN_DIR",
    "PROTO_FILE",
    "RegenerationError",
    "check",
    "diff_trees",
    "generate",
    "generated_tree",
    "install",
    "main",
    "regenerate",
]

GEN_DIR = Path(__file__).resolve().parent
REPO_ROOT = GEN_DIR.parents[1]
PROTO_FILE = REPO_ROOT / "proto" / "csi.proto"

PLUGIN_NAME = "protoc-gen-python_betterproto2"
PLUGIN_OPTIONS = "client_generation=async,server_generation=async"
# Files in GEN_DIR's top level that people write; everything else there is generated.
HAND_WRITTEN = frozenset({"__init__.py", "regenerate.py"})
CACHE_DIR = "__pycache__"
DIFF_LINES_PER_FILE = 40
PROTOC_TIMEOUT_S = 120


class RegenerationError(RuntimeError):
    """protoc or the betterproto2 plugin could not run or failed."""


def _tool_path() -> str:
    """PATH with this interpreter's bin directory first.

    The plugin pipes its output through `ruff` found on PATH; the project pins ruff, so the
    venv's copy must win or the output would depend on whatever ruff the caller has.
    """
    tools_dir = str(Path(sys.executable).parent)
    return os.pathsep.join([tools_dir, os.environ.get("PATH", "")])


def _find_plugin(search_path: str) -> str:
    plugin = shutil.which(PLUGIN_NAME, path=search_path)
    if plugin is None:
        raise RegenerationError(
            f"{PLUGIN_NAME} not found: install the dev extras (pip install -e '.[dev]')"
        )
    if shutil.which("ruff", path=search_path) is None:
        raise RegenerationError("ruff not found: betterproto2 needs it to format its output")
    return plugin


def generate(proto_file: Path, out_dir: Path) -> None:
    """Run protoc with the betterproto2 plugin, writing the package tree into out_dir."""
    search_path = _tool_path()
    plugin = _find_plugin(search_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={proto_file.parent.resolve()}",
        f"--plugin={PLUGIN_NAME}={plugin}",
        f"--python_betterproto2_out={out_dir.resolve()}",
        f"--python_betterproto2_opt={PLUGIN_OPTIONS}",
        str(proto_file.resolve()),
    ]
    try:
        # The plugin formats its output with ruff on stdin, which reads the settings of the
        # directory it runs in: run from the repository so pyproject.toml decides, the same
        # on every machine, rather than some user-level ruff configuration.
        result = subprocess.run(
            argv,
            cwd=REPO_ROOT,
            env={**os.environ, "PATH": search_path},
            capture_output=True,
            text=True,
            timeout=PROTOC_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RegenerationError(f"protoc did not finish within {PROTOC_TIMEOUT_S} s") from exc
    if result.returncode != 0:
        raise RegenerationError(
            f"protoc failed with exit code {result.returncode}:\n{result.stderr.strip()}"
        )


def _is_generated(relative: Path) -> bool:
    if CACHE_DIR in relative.parts:
        return False
    return not (len(relative.parts) == 1 and relative.name in HAND_WRITTEN)


def generated_tree(root: Path) -> dict[str, bytes]:
    """The generated files under root, keyed by POSIX path relative to root."""
    tree: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and _is_generated(relative):
            tree[relative.as_posix()] = path.read_bytes()
    return tree


def _unified_diff(name: str, committed: bytes, fresh: bytes) -> list[str]:
    diff = list(
        difflib.unified_diff(
            committed.decode("utf-8", "replace").splitlines(),
            fresh.decode("utf-8", "replace").splitlines(),
            fromfile=f"committed/{name}",
            tofile=f"generated/{name}",
            lineterm="",
        )
    )
    if len(diff) > DIFF_LINES_PER_FILE:
        hidden = len(diff) - DIFF_LINES_PER_FILE
        diff = [*diff[:DIFF_LINES_PER_FILE], f"... ({hidden} more diff lines)"]
    return diff


def diff_trees(committed: Mapping[str, bytes], fresh: Mapping[str, bytes]) -> list[str]:
    """A readable report of how committed differs from fresh; empty when they are equal."""
    summary: list[str] = []
    details: list[str] = []
    for name in sorted(committed.keys() | fresh.keys()):
        if name not in committed:
            summary.append(f"  missing:    {name} (the generator makes it, it is not committed)")
        elif name not in fresh:
            summary.append(f"  unexpected: {name} (committed, but no longer generated)")
        elif committed[name] != fresh[name]:
            diff = _unified_diff(name, committed[name], fresh[name])
            added = sum(1 for line in diff if line.startswith("+") and not line.startswith("+++"))
            removed = sum(1 for line in diff if line.startswith("-") and not line.startswith("---"))
            summary.append(f"  changed:    {name} (+{added} -{removed} lines)")
            details.extend(diff)
    if not summary:
        return []
    return [f"{len(summary)} generated file(s) differ:", *summary, *details]


def check(proto_file: Path = PROTO_FILE, gen_dir: Path = GEN_DIR) -> list[str]:
    """Generate afresh and report how the code in gen_dir differs; empty when current."""
    with tempfile.TemporaryDirectory(prefix="rds-csi-gen-") as scratch:
        fresh_root = Path(scratch)
        generate(proto_file, fresh_root)
        return diff_trees(generated_tree(gen_dir), generated_tree(fresh_root))


def install(fresh_root: Path, gen_dir: Path) -> None:
    """Replace the generated parts of gen_dir with those of fresh_root.

    Hand-written top-level files and bytecode caches in gen_dir are left untouched;
    generated files that the new output no longer contains are removed.
    """
    for entry in gen_dir.iterdir():
        if entry.name in HAND_WRITTEN or entry.name == CACHE_DIR:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for entry in fresh_root.iterdir():
        if entry.name in HAND_WRITTEN or entry.name == CACHE_DIR:
            continue
        target = gen_dir / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, ignore=shutil.ignore_patterns(CACHE_DIR))
        else:
            shutil.copyfile(entry, target)


def regenerate(proto_file: Path = PROTO_FILE, gen_dir: Path = GEN_DIR) -> None:
    """Generate into a temporary directory first, so a failed run leaves gen_dir intact."""
    with tempfile.TemporaryDirectory(prefix="rds-csi-gen-") as scratch:
        fresh_root = Path(scratch)
        generate(proto_file, fresh_root)
        install(fresh_root, gen_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rds_csi.gen.regenerate",
        description="Regenerate rds_csi/gen from proto/csi.proto with betterproto2.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 and show the difference if the committed code is stale",
    )
    parser.add_argument("--proto", type=Path, default=PROTO_FILE, help="proto file to compile")
    parser.add_argument("--gen-dir", type=Path, default=GEN_DIR, help="package to write or check")
    args = parser.parse_args(argv)
    proto_file: Path = args.proto
    gen_dir: Path = args.gen_dir

    try:
        if not args.check:
            regenerate(proto_file, gen_dir)
            print(f"regenerated {gen_dir} from {proto_file}")
            return 0
        report = check(proto_file, gen_dir)
    except RegenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if report:
        print(f"{gen_dir} is stale with respect to {proto_file}; run `make proto`.")
        print("\n".join(report))
        return 1
    print(f"{gen_dir} matches {proto_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
