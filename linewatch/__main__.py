"""``python -m linewatch`` = the ``linewatch`` command."""

from linewatch.cli import main

main()
