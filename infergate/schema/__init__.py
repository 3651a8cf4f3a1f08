"""The shared vocabulary: datatypes, tensor specs, raw tensor bytes and the error hierarchy.

Everything above it (the core, the backends, the clients, the CLI) speaks these
types, and this package imports nothing else of infergate's, so it can sit at the
bottom of the import graph (docs/architecture.md, "Layers").
"""
