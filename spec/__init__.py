"""next-token-spec: every claim the documents make about next-token prediction, as a Hypothesis property.

Run it against a target (the reference, a HuggingFace model, a trained model, or your
own implementation through ``spec.target.Target``) with ``next-token-spec check`` or
``pytest --target``.
"""

__version__ = "0.1.0"
