"""`python -m valpat_keras` runs the `valpat` command line."""

from valpat_keras.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
