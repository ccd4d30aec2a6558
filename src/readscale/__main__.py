"""``python -m readscale``: the command line, for where the ``readscale`` script is not on
PATH (a virtualenv not activated, ``pipx run``, a container's entry point)."""

from readscale.cli import main

main()
