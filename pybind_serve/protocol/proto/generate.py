"""Regenerate the gRPC modules of this folder from its ``.proto`` files.

    python -m pybind_serve.protocol.proto.generate [--out DIR]

Runs grpcio-tools' protoc (``pip install -e '.[dev]'`` installs the pinned version; another version writes
other version checks into the files), then points the generated modules at `POOL` (see ``__init__``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]  # imports in the .proto files are relative to the repository root
PROTOS = ("model_config.proto", "grpc_service.proto", "health.proto")
DEFAULT_POOL = "_descriptor_pool.Default()"
OUR_POOL = "_our_pool"
POOL_IMPORT = "from pybind_serve.protocol.proto import POOL as _our_pool  # not the default pool: see __init__\n"


def generate(out: Path) -> list[Path]:
    """Write the generated ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` files into ``out``; return them."""
    from grpc_tools import protoc  # the dev extra only: users never regenerate

    with tempfile.TemporaryDirectory() as raw:
        sources = [str((HERE / name).relative_to(ROOT)) for name in PROTOS]
        include = str(Path(protoc.__file__).parent / "_proto")  # protobuf's well-known types
        args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={raw}", f"--pyi_out={raw}"]
        if protoc.main([*args, f"--grpc_python_out={raw}", *sources]) != 0:
            raise SystemExit("protoc failed; see its message above")
        generated = [path for path in sorted((Path(raw) / HERE.relative_to(ROOT)).glob("*_pb2*")) if _wanted(path)]
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for path in generated:
            target = out / path.name
            target.write_text(_use_our_pool(path.read_text()))
            written.append(target)
    return written


def _wanted(path: Path) -> bool:
    """Not the empty ``_pb2_grpc.py`` protoc writes for a file that declares no service."""
    return not path.name.endswith("_pb2_grpc.py") or "class " in path.read_text()


def _use_our_pool(code: str) -> str:
    if DEFAULT_POOL not in code:
        return code
    marker = "# @@protoc_insertion_point(imports)\n"
    if marker not in code:
        raise SystemExit("protoc's output has no imports insertion point; update generate.py for this protoc")
    return code.replace(marker, marker + POOL_IMPORT, 1).replace(DEFAULT_POOL, OUR_POOL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the modules (default: here)")
    for path in generate(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
