"""One-off experiments that docs/research/ quotes, kept so that their figures can be rerun."""
