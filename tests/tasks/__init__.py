"""Task tests (a package so their basenames may repeat those under tests/data)."""
