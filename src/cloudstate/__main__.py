"""``python -m cloudstate``: the same as the ``cloudstate`` command."""

from __future__ import annotations

from cloudstate.cli import main

main()
