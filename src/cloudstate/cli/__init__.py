"""The ``cloudstate`` command line (Typer + Rich)."""

from __future__ import annotations

from cloudstate.cli.app import app, main

__all__ = ["app", "main"]
