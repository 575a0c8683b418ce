"""Custom socket types of the pack."""

from .host_compat import io

VerifierType = io.Custom("VERIFIER")
SearchType = io.Custom("SEARCH")
# What judges candidates (the VAE that decodes them, the verifier, its condition), as a GUIDER
# bundles the model and its conditioning.
JudgeType = io.Custom("JUDGE")
