"""A transformers Llama with random weights as a spec target, two ways (docs/adapters.md).

    PYTHONPATH=. next-token-spec check examples.hf_llama_adapter:llama         # the minimal route
    PYTHONPATH=. next-token-spec check examples.hf_llama_adapter:llama_target  # an HFTarget subclass

``llama`` returns the bare nn.Module: the registry wraps it in spec.targets.hf_target.HFTarget, which drives it as
HuggingFace models are driven (input_ids, attention_mask, output_hidden_states, a KV cache, generate, the logits
warpers). ``LlamaTarget`` subclasses HFTarget to add what no model object carries: its tokenizer.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from spec.target import Tokenizer
from spec.targets.hf_target import HFTarget
from spec.targets.tokenizers import HFTokenizer

VOCAB = 320  # 256 byte tokens and 64 merges learned from CORPUS
CORPUS = ("The cat sat on the mat. The storm is coming, and the next storm is worse. The sun rises; the moon sets. "
          "A dog is at the bar with a drink. I saw the cat, the dog and the sun. The next one is the best.")


def llama(device: str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """A 2-layer Llama (4 query heads sharing 2 key/value heads), seeded random weights, eager attention (the
    implementation that returns attention weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False, attn_implementation="eager")  # type: ignore[call-arg]
    with torch.random.fork_rng():  # HF's init draws from the global generator: leave the caller's alone
        model = LlamaForCausalLM(config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # HF's init (std 0.02) leaves a tiny model's logits near-constant: give them spread
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * noise if "norm" in name else 0.2 * noise)
    return model.to(device=device, dtype=dtype).eval()  # type: ignore[call-arg]


def llama_target(device: str = "cpu", dtype: torch.dtype = torch.float32) -> LlamaTarget:
    return LlamaTarget(llama(device, dtype), name="llama-target")


class LlamaTarget(HFTarget):
    """HFTarget plus the tokenizer that goes with the model (HFTarget sees only the nn.Module)."""

    def tokenizer(self) -> Tokenizer:
        return BPETokenizer(bpe_tokenizer())


class BPETokenizer(HFTokenizer):
    """The project's HFTokenizer view of a transformers tokenizer, plus token_to_id (TOK-2 checks it inverts
    id_to_token where it exists)."""

    def token_to_id(self, token: str) -> int:
        return int(self.tok.convert_tokens_to_ids(token))


@functools.cache
def bpe_tokenizer() -> Any:
    """A byte-level BPE (GPT-2's scheme) trained here on CORPUS, as transformers' PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = RustTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # every byte is a token: any text can be encoded
    tok.train_from_iterator([CORPUS], trainers.BpeTrainer(vocab_size=VOCAB, initial_alphabet=alphabet,
                                                          show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok)
