"""Scaling studies for Noise Search: prompt sets x strategies x verifiers x budgets x seeds.

Run from the pack folder (``ComfyUI/custom_nodes/noise-search``)::

    python -m sweep run my_sweep.toml          # or: python -m sweep my_sweep.toml
    python -m sweep run my_sweep.toml --shard 3/8
    python -m sweep report my_sweep.toml
    python -m sweep tasks my_sweep.toml

Every task (one prompt, one seed, one setting = search verifier x strategy x budget) is one
prompt queued on a ComfyUI server over its HTTP API; Ray schedules the tasks over one actor
per server. Results are one JSONL row per task, written as each task finishes, so a re-run
does only what is missing. See ``sweep/README.md`` and ``sweep/example.toml``.

The driver needs the standard library plus ``ray``, ``tqdm``, ``numpy`` and ``matplotlib``
(for the report), and torch: the strategy kinds are the pack's strategy registry
(search/registry.py), read when a config is parsed. Nothing here imports ComfyUI.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
