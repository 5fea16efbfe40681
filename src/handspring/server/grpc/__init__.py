"""gRPC on the HTTP server's engine: the Open Inference Protocol (KServe v2 / Triton
`inference.GRPCInferenceService`) and the seed project's `embeddings_proto.Embeddings`.

Nothing is imported here: grpcio is loaded only by a server started with `--grpc-port`
(see `handspring.server.grpc.server`).
"""
