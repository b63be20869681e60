"""The `valpat` command line: one module per command (parse -> run config -> one library call)."""

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Runs the `valpat` command (see `valpat_keras.cli.main.main`)."""
    from valpat_keras.cli.main import main as run  # imported on call: keeps `cli` light

    return run(argv)
