"""Developer tooling for piximi-py (site assembly, serving). Not shipped in the wheel."""
