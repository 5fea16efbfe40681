"""Modules generated from `../protos` by `python -m handspring.server.grpc.regenerate`.

Their descriptors live in `POOL`, not protobuf's default pool (see the regenerate module).
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
