"""Offline scaling testbed: a tiny class-conditional diffusion model on sklearn's digits.

Pure torch (no ComfyUI imports) so it trains and runs anywhere in seconds to minutes.
"""
