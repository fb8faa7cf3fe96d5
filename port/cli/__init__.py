"""Command lines of ``python -m port``: one module per subcommand, each with ``main(argv) -> int``."""
