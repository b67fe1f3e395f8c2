"""``python -m xraylab_cli`` is the ``xraylab`` command."""

from xraylab_cli import main

main()
