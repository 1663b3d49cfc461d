"""API token scopes. They nest: ``admin`` ⊃ ``write`` ⊃ ``read``."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


RANK = {Scope.READ: 1, Scope.WRITE: 2, Scope.ADMIN: 3}


def grants(held: Scope, needed: Scope) -> bool:
    return RANK[held] >= RANK[needed]
