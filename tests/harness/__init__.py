"""Test harness: ComfyUI in-process and as a live server, plus tiny models built on the fly."""
