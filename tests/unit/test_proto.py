"""The gRPC wire format: the committed generated modules are what generate.py makes of our .proto files, and
every message we declare matches Triton's field for field, so any KServe v2 / Triton client can talk to us."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor

from pybind_serve.protocol import proto
from pybind_serve.protocol.proto import grpc_service_pb2, health_pb2, model_config_pb2

PROTO_DIR = Path(proto.__file__).parent


def test_the_committed_modules_are_what_generate_makes(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools comes with the dev extra")
    from pybind_serve.protocol.proto import generate

    written = generate.generate(tmp_path)
    committed = sorted(p.name for p in PROTO_DIR.iterdir() if "_pb2" in p.name and p.suffix in (".py", ".pyi"))
    assert sorted(p.name for p in written) == committed
    for path in written:
        assert path.read_text() == (PROTO_DIR / path.name).read_text(), (
            f"{path.name} differs from what generate.py makes: run python -m pybind_serve.protocol.proto.generate"
        )


def test_descriptors_live_in_our_own_pool() -> None:
    # tritonclient registers the same full names in protobuf's default pool; ours must not collide with them.
    import tritonclient.grpc.service_pb2  # noqa: F401 - imported for its side effect on the default pool

    for module in (grpc_service_pb2, model_config_pb2, health_pb2):
        assert module.DESCRIPTOR.pool is proto.POOL


def _field(field: FieldDescriptor) -> tuple[object, ...]:
    kind = field.message_type or field.enum_type
    return (field.name, field.number, field.type, field.is_repeated, kind.full_name if kind else None)


def _check_message(ours: Descriptor, theirs: Descriptor) -> None:
    mine = {f.number: _field(f) for f in ours.fields}
    reference = {f.number: _field(f) for f in theirs.fields}
    assert {n: reference.get(n) for n in mine} == mine, ours.full_name
    for nested in ours.nested_types:
        _check_message(nested, theirs.nested_types_by_name[nested.name])
    for enum in ours.enum_types:
        _check_enum(enum, theirs.enum_types_by_name[enum.name])


def _check_enum(ours: EnumDescriptor, theirs: EnumDescriptor) -> None:
    assert {v.name: v.number for v in ours.values} == {
        v.name: theirs.values_by_name[v.name].number for v in ours.values
    }


def _reference(module: str) -> FileDescriptor:
    return pytest.importorskip(module, reason="tritonclient[grpc] is the reference").DESCRIPTOR


@pytest.mark.parametrize(
    ("ours", "reference"),
    [
        (grpc_service_pb2.DESCRIPTOR, "tritonclient.grpc.service_pb2"),
        (model_config_pb2.DESCRIPTOR, "tritonclient.grpc.model_config_pb2"),
        (health_pb2.DESCRIPTOR, "grpc_health.v1.health_pb2"),
    ],
    ids=["grpc_service", "model_config", "health"],
)
def test_every_declared_field_matches_the_reference(ours: FileDescriptor, reference: str) -> None:
    theirs = _reference(reference)
    assert ours.package == theirs.package
    for name, message in ours.message_types_by_name.items():
        _check_message(message, theirs.message_types_by_name[name])
    for name, enum in ours.enum_types_by_name.items():
        _check_enum(enum, theirs.enum_types_by_name[name])
    for name, service in ours.services_by_name.items():
        reference_methods = theirs.services_by_name[name].methods_by_name
        for method in service.methods:
            other = reference_methods[method.name]
            assert (method.input_type.full_name, method.output_type.full_name) == (
                other.input_type.full_name,
                other.output_type.full_name,
            )
            assert (method.client_streaming, method.server_streaming) == (
                other.client_streaming,
                other.server_streaming,
            )
