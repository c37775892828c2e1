"""Learned bottlenecks and the bitstream container that carries their output across the split."""
