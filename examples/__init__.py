"""Worked adapters (docs/adapters.md): a hand-written tiny GPT and a transformers Llama, checked by the catalog.

Not installed with the project (pyproject packages only reference and spec): run from the repository root, with
the root on the path, e.g. ``PYTHONPATH=. next-token-spec check examples.tiny_gpt_adapter:tiny_gpt``.
"""
