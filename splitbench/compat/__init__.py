"""Interoperability with other split-computing tools (reading their checkpoints; no runtime dependency)."""
