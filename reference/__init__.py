"""A small, readable PyTorch implementation of how a transformer turns tokens into a prediction.

One module per stage: tokenizer -> embedding -> positions -> attention, mlp, norms in
blocks -> unembedding -> sampling -> generate (with the KV cache). ``Stages`` (reference.stages)
names each replaceable step; a model computes through its own bundle of them.
"""

from reference.cache import KVCache
from reference.config import ModelConfig
from reference.generate import generate
from reference.model import ForwardOutput, Transformer, build, init_random
from reference.presets import PRESETS, preset
from reference.sampling import filtered_probabilities, greedy, sample, softmax, top_k_filter, top_p_filter
from reference.stages import Stages

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "ForwardOutput",
    "KVCache",
    "ModelConfig",
    "Stages",
    "Transformer",
    "build",
    "filtered_probabilities",
    "generate",
    "greedy",
    "init_random",
    "preset",
    "sample",
    "softmax",
    "top_k_filter",
    "top_p_filter",
]
