"""Custom socket types of the pack."""

from .host_compat import io

VerifierType = io.Custom("VERIFIER")
SearchType = io.Custom("SEARCH")
