"""Custom socket types of the pack."""

from comfy_api.latest import io

VerifierType = io.Custom("VERIFIER")
SearchType = io.Custom("SEARCH")
