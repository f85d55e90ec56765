"""llama.cpp (through llama-cpp-python) on the SmolLM2 GGUF file: target ``llamacpp:smollm2``.

llama.cpp runs the file as it is: its weights stay quantized (Q4_1, the embedding
Q8_0) and the activations entering each quantized matmul are rounded to 8 bits, so its
logits are not float32's. Its tolerance class is ``quantized`` (spec.tolerance): logits
are judged by per-position KL and top-1 agreement, not elementwise.

What llama.cpp exposes, and so what this target offers:

- ``logits``: every position's logits (``logits_all=True``), one sequence at a time
  from an empty KV cache. llama.cpp has no padding: it batches sequences by sequence
  id. A left-padded row is therefore evaluated on its real tokens alone (positions from
  0, as the mask says) and its padding positions' logits are set to 0 (unspecified by
  the claims); GEN-3 on this target checks that llama.cpp gives a row the same logits
  whichever batch it came in, not llama.cpp's own batching.
- ``decode``: the prefix in one call, then one token per call through llama.cpp's KV cache.
- ``generate``: llama.cpp's own greedy sampler (temperature 0) through ``Llama.generate``.
- ``tokenizer``: llama.cpp's tokenizer of the file (``special=False``, no BOS added).
- ``config`` and ``reference_model``: the same file read by the reference's GGUF loader
  (the converter from this target's weights to the reference), so REF-1 compares
  llama.cpp with the reference's float32 dequantized run under the quantized class.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from reference.config import ModelConfig
from reference.model import Transformer
from spec.target import Target, Tokenizer

N_CTX = 512  # the claims' prompts are far shorter; llama.cpp allocates its KV cache for this many positions


class LlamaCppTokenizer:
    """llama.cpp's own tokenizer of the GGUF vocabulary (plain text: no BOS, special tokens not parsed)."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    @property
    def vocab_size(self) -> int:
        return int(self.llm.n_vocab())

    def encode(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def decode(self, ids: list[int]) -> str:
        return bytes(self.llm.detokenize([int(i) for i in ids], special=False)).decode("utf-8", errors="replace")

    def id_to_token(self, i: int) -> str:
        return str(self.llm._model.token_get_text(int(i)))


class LlamaCppTarget(Target):
    """A llama_cpp.Llama model with logits for every position."""

    tolerance = "quantized"
    trained = True  # type: ignore[misc]

    def __init__(self, llm: Any, name: str = "llamacpp:smollm2") -> None:
        import llama_cpp

        self.llm, self.name = llm, name
        self.version = f"llama-cpp-python {llama_cpp.__version__}"
        self.vocab_size = int(llm.n_vocab())
        self.max_positions = int(llm.n_ctx())

    def _rows(self, ids: Tensor, attention_mask: Tensor | None) -> list[list[int]]:
        """Each row's real tokens (left padding removed as the mask says)."""
        mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        return [row[m].tolist() for row, m in zip(ids.cpu(), mask.cpu(), strict=True)]

    def _place(self, rows: list[Tensor], width: int) -> Tensor:
        """Right-align each row's logits [n_r, V] in a [B, width, V] tensor; padding positions 0."""
        out = torch.zeros(len(rows), width, self.vocab_size)
        for r, z in enumerate(rows):
            if z.shape[0]:
                out[r, width - z.shape[0]:] = z
        return out

    def _eval(self, steps: list[list[int]]) -> Tensor:
        """Evaluate ``steps`` in turn from an empty KV cache (each a call to llama.cpp); logits [n, V]."""
        self.llm.reset()
        for chunk in steps:
            if chunk:
                self.llm.eval(chunk)
        return torch.from_numpy(self.llm.scores[: self.llm.n_tokens].copy())

    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        self.check_length(ids.shape[-1])
        rows = [self._eval([row]) for row in self._rows(ids, attention_mask)]
        return self._place(rows, ids.shape[1])

    def decode(self, ids: Tensor, prefill: int, attention_mask: Tensor | None = None) -> Tensor:
        """Feed each row's real tokens among ids[:, :prefill] at once, then one token per call (KV cache)."""
        self.check_length(ids.shape[-1])
        mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        rows = []
        for row, m in zip(ids.cpu(), mask.cpu(), strict=True):
            first = row[:prefill][m[:prefill]].tolist()
            rest = [[int(row[t])] for t in range(prefill, ids.shape[1]) if bool(m[t])]
            rows.append(self._eval([first, *rest]))
        return self._place(rows, ids.shape[1])

    def generate(self, ids: Tensor, max_new_tokens: int, attention_mask: Tensor | None = None) -> Tensor:
        """llama.cpp's greedy sampler (temperature 0) on each row's real tokens; the padded prompt is kept."""
        self.check_length(ids.shape[-1] + max_new_tokens)
        new = []
        for row in self._rows(ids, attention_mask):
            self.llm.reset()
            got: list[int] = []
            if max_new_tokens > 0:
                for tok in self.llm.generate(row, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
                    got.append(int(tok))
                    if len(got) == max_new_tokens:
                        break
            new.append(got)
        return torch.cat([ids.cpu(), torch.tensor(new, dtype=torch.long).reshape(len(new), max_new_tokens)], dim=1)

    def tokenizer(self) -> Tokenizer:
        return LlamaCppTokenizer(self.llm)

    def config(self) -> ModelConfig:
        return self.reference_model().cfg

    def reference_model(self) -> Transformer:
        from spec.targets.smollm2 import load_reference

        return load_reference().model


@functools.cache
def load(n_threads: int = 1) -> LlamaCppTarget:
    """``llamacpp:smollm2``: the verified SmolLM2 GGUF in llama.cpp on the CPU, logits for every position."""
    from llama_cpp import Llama

    from spec.targets import smollm2
    from spec.targets.smollm2 import locate_gguf

    llm = Llama(model_path=str(locate_gguf()), n_ctx=N_CTX, n_batch=N_CTX, n_threads=n_threads,
                logits_all=True, verbose=False, seed=0)
    target = LlamaCppTarget(llm)
    target.max_examples = smollm2.MAX_EXAMPLES  # the same model size and budget as the smollm2 targets
    target.realistic_examples = smollm2.REALISTIC_EXAMPLES
    return target


def from_spec(rest: str, device: str, dtype: torch.dtype) -> Target:
    """The registry's ``llamacpp`` kind: ``llamacpp:smollm2`` only, on the CPU."""
    if rest != "smollm2":
        raise ValueError(f"unknown target llamacpp:{rest}: the llama.cpp peer runs llamacpp:smollm2 only")
    if device != "cpu":
        raise ValueError(f"target llamacpp:smollm2 runs on llama.cpp's CPU build; device {device!r} is not offered")
    return load()
