"""rayda: Deliberative Alignment on Ray. Importing this package starts nothing and imports no engine."""

__version__ = "0.1.0"
