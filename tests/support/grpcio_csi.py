"""Google protobuf + grpcio bindings for proto/csi.proto, compiled once per test process.

The tests use them as a second, independent gRPC stack: a client that shares no code with
betterproto2 and grpclib, just as kubelet's grpc-go shares none. Nothing is committed; the
bindings are compiled from the same proto file into a private temporary directory, loaded,
and the directory is removed when the process exits.
"""

from __future__ import annotations

import atexit
import importlib.resources
import importlib.util
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType

from grpc_tools import protoc  # type: ignore[import-untyped]

__all__ = ["PROTO_FILE", "load_grpcio_csi"]

PROTO_FILE = Path(__file__).resolve().parents[2] / "proto" / "csi.proto"

# csi_pb2_grpc.py does `import csi_pb2`: that bare name must resolve to our module while it
# loads. The pair is cached so the descriptor pool sees "csi.proto" exactly once.
_PB2 = "csi_pb2"
_PB2_GRPC = "csi_pb2_grpc"
_lock = threading.Lock()
_loaded: tuple[ModuleType, ModuleType] | None = None


def _compile(out_dir: Path) -> None:
    well_known_types = importlib.resources.files("grpc_tools") / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_FILE.parent}",
            f"--proto_path={well_known_types}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO_FILE),
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc could not compile {PROTO_FILE} (exit code {status})")


def _load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(out_dir: Path) -> tuple[ModuleType, ModuleType]:
    foreign = sys.modules.get(_PB2)
    if foreign is not None:
        raise RuntimeError(f"another module already owns the name {_PB2!r}: {foreign!r}")
    csi_pb2 = _load_module(_PB2, out_dir / f"{_PB2}.py")
    # Loaded from an explicit path, so sys.path is never touched; the name is registered
    # only for as long as csi_pb2_grpc's `import csi_pb2` needs it.
    sys.modules[_PB2] = csi_pb2
    try:
        csi_pb2_grpc = _load_module(_PB2_GRPC, out_dir / f"{_PB2_GRPC}.py")
    finally:
        del sys.modules[_PB2]
    return csi_pb2, csi_pb2_grpc


def load_grpcio_csi() -> tuple[ModuleType, ModuleType]:
    """Return (csi_pb2, csi_pb2_grpc) for proto/csi.proto, compiling them on first use."""
    global _loaded
    with _lock:
        if _loaded is None:
            out_dir = Path(tempfile.mkdtemp(prefix="rds-csi-grpcio-"))
            atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
            _compile(out_dir)
            _loaded = _load(out_dir)
        return _loaded
