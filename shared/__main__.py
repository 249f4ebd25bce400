"""``python -m shared`` runs the ``fieldlink`` command."""

from shared.cli import main

main()
