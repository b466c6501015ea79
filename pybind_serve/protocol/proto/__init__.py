"""The gRPC wire format: our ``.proto`` files and the modules grpcio-tools generates from them.

``grpc_service.proto`` declares ``inference.GRPCInferenceService`` with Triton's message and field numbers,
``model_config.proto`` the part of Triton's model config we report, ``health.proto`` the standard
``grpc.health.v1.Health`` service. Regenerate the ``*_pb2*.py`` files with
``python -m pybind_serve.protocol.proto.generate`` (it needs the ``dev`` extra's pinned grpcio-tools);
a unit test fails when the committed ones differ from what it produces.

The generated modules register their descriptors in `POOL`, not in protobuf's default pool: tritonclient
(and grpcio-health-checking) register messages of the same full names (``inference.ModelInferRequest``) in
the default pool, and protobuf refuses a second definition of a name, so a process that imports both would
fail. On the wire only field numbers and the service's full name count, which are the same.
"""

from google.protobuf.descriptor_pool import DescriptorPool

__all__ = ["POOL"]

POOL = DescriptorPool()
