"""Sans-I/O KServe v2 protocol: request/response bodies <-> our internal objects, and the metadata and config
documents. No sockets and no event loop here: the HTTP front, the gRPC front and the client share it."""
