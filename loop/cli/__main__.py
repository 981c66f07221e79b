"""``python -m loop.cli``: the ``cortexloop`` command, for child processes started with this interpreter."""

from loop.cli import main

main()
