"""Custom socket types of the pack."""

from .host_compat import io

VerifierType = io.Custom("VERIFIER")
SearchType = io.Custom("SEARCH")
# What judges candidates (the VAE that decodes them, the verifier, its condition), as a GUIDER
# bundles the model and its conditioning.
JudgeType = io.Custom("JUDGE")
# Which final candidate a search returns (best, tempered, threshold): search/selection.py.
SelectionType = io.Custom("SEARCH_SELECTION")
# A draft model a search generates and judges candidates with (the main model regenerates the finalists).
DraftType = io.Custom("SEARCH_DRAFT")
