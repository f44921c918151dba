"""Errors a user can hit when loading or running a model package.

Owns nothing else; imports nothing from the project.
"""

from __future__ import annotations


class PackageError(ValueError):
    """A model package is unusable. `kind` names the class of fault for programs and tests.

    Kinds: invalid, schema_version, missing_file, extra_file, hash_mismatch, path_escape,
    unsafe_file, inconsistent, non_finite.
    """

    KINDS = (
        'invalid', 'schema_version', 'missing_file', 'extra_file', 'hash_mismatch',
        'path_escape', 'unsafe_file', 'inconsistent', 'non_finite',
    )

    def __init__(self, kind: str, message: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f'unknown PackageError kind {kind!r}')
        super().__init__(message)
        self.kind = kind
