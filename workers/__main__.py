"""``python -m workers`` is the ``dialer`` command."""

from workers.cli import main


main()
