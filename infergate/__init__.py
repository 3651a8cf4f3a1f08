"""infergate: a gRPC inference gateway."""

__version__ = "0.1.0"
