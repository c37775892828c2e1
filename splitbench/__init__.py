"""splitbench: supervised compression for split computing, benchmarked on one protocol."""

__version__ = "0.1.0"
