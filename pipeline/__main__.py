"""``python -m pipeline`` is the ``eocube`` command."""

from pipeline.cli import main

main()
