"""HuggingFace transformers checkpoints as reference Transformers.

Each supported family has one module here with two functions, ``config(hf_config)``
(the reference ModelConfig, every field read from an explicit HF config field) and
``state_dict(hf_config, hf_state_dict)`` (the weights under the reference's names).
``CONVERTERS`` maps HF's ``config.model_type`` to that module; ``from_hf`` looks the
converter up there and loads the weights with ``strict=True``, so a missing or extra
parameter is an error, never a silently different model.

A config the reference cannot express (post-norm OPT, soft-capping, scaled rotary, a
nonlinearity that differs from the reference's, ...) raises ``UnsupportedConfig``
naming the HF config field and its value.

    >>> hf = AutoModelForCausalLM.from_pretrained("gpt2")     # doctest: +SKIP
    >>> model = from_hf(hf, dtype=torch.float64)               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor

from reference.config import ModelConfig
from reference.convert import (
    bloom,
    falcon,
    gemma,
    gpt2,
    gpt_neox,
    gptj,
    llama,
    mistral,
    opt,
    phi,
    phi3,
    qwen2,
)
from reference.convert.common import UnsupportedConfig
from reference.model import Transformer


class Converter(Protocol):
    """What a family module provides (modules satisfy this protocol structurally)."""

    def config(self, hf_config: Any) -> ModelConfig:
        """The reference ModelConfig of an HF config; UnsupportedConfig if it is not expressible."""
        ...

    def state_dict(self, hf_config: Any, hf_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The HF weights under the reference's parameter names (same dtype and device)."""
        ...


CONVERTERS: dict[str, Converter] = {
    "bloom": bloom,
    "falcon": falcon,
    "gemma": gemma,
    "gpt2": gpt2,
    "gpt_neox": gpt_neox,
    "gptj": gptj,
    "llama": llama,
    "mistral": mistral,
    "opt": opt,
    "phi": phi,
    "phi3": phi3,
    "qwen2": qwen2,
}


def converter_for(hf_config: Any) -> Converter:
    """The converter registered for ``hf_config.model_type``; UnsupportedConfig lists the supported ones."""
    model_type = getattr(hf_config, "model_type", None)
    try:
        return CONVERTERS[model_type]  # type: ignore[index]
    except KeyError:
        raise UnsupportedConfig(f"config.model_type={model_type!r} has no converter; supported model types: "
                                f"{sorted(CONVERTERS)}") from None


def check_not_quantized(hf_config: Any, hf_state_dict: Mapping[str, Tensor]) -> None:
    """Refuse quantized weights; accept a quantization_config whose weights are already plain floats.

    transformers' GGUF loader (``from_pretrained(..., gguf_file=...)``) dequantizes every
    tensor to float on load but leaves ``quantization_config = GgufConfig(quant_method='gguf')``
    on the config: those weights are ordinary floats and convert like any others. Other
    methods (bitsandbytes, GPTQ, AWQ, ...) keep packed integer weights and scales that the
    reference's float matmuls cannot use, so they are refused, as is any non-float weight.
    """
    qc = getattr(hf_config, "quantization_config", None)
    if qc is None:
        return
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    method = str(getattr(method, "value", method))
    if method != "gguf":
        raise UnsupportedConfig(f"config.quantization_config quant_method={method!r}: quantized weights; only GGUF "
                                "checkpoints that transformers dequantized on load ('gguf') convert")
    packed = [name for name, w in hf_state_dict.items() if not w.is_floating_point()]
    if packed:
        raise UnsupportedConfig(f"config.quantization_config quant_method='gguf' but weights {packed[:3]} are "
                                "not floating point: they were not dequantized")


def from_hf(hf_model_or_config_and_state_dict: Any, *, device: torch.device | str | None = None,
            dtype: torch.dtype | None = None) -> Transformer:
    """A reference Transformer with the weights of an HF causal LM, sharing them (no copy).

    Accepts an HF model (anything with ``.config`` and ``.state_dict()``, e.g. a
    ``*ForCausalLM``) or a pair ``(hf_config, hf_state_dict)``. The model is built on
    ``device`` and in ``dtype``, by default those of the HF weights, and returned in
    eval mode. With the defaults its parameters are the HF tensors themselves or views of
    them (see ``reference.convert.common``): it is built on the meta device, so no
    full-size weight is ever allocated, and the converted tensors are assigned in, not
    copied. An edit to one model's weights is therefore an edit to the other's. Another
    device or dtype converts each tensor, which is a copy by definition.
    """
    source = hf_model_or_config_and_state_dict
    if isinstance(source, tuple):
        hf_config, hf_state_dict = source
    else:
        hf_config, hf_state_dict = source.config, source.state_dict()
    conv = converter_for(hf_config)
    cfg = conv.config(hf_config)
    check_not_quantized(hf_config, hf_state_dict)
    weights = conv.state_dict(hf_config, hf_state_dict)
    first = weights["embed.E"]
    return assemble(cfg, weights, device=first.device if device is None else device,
                    dtype=first.dtype if dtype is None else dtype)


def assemble(cfg: ModelConfig, weights: Mapping[str, Tensor], *, device: torch.device | str | None,
             dtype: torch.dtype) -> Transformer:
    """A Transformer whose parameters are ``weights`` themselves (moved to device and dtype only where they differ;
    device None leaves each where it is).

    Built on the meta device (shapes, no memory, no initialisation) and loaded with
    ``assign=True``: strict loading still checks every name and shape, and each parameter
    becomes the given tensor instead of a copy of it.
    """
    model = Transformer(cfg, device="meta", dtype=dtype)
    moved = {name: w.detach().to(device=device, dtype=dtype) for name, w in weights.items()}
    model.load_state_dict(moved, strict=True, assign=True)
    return model.eval()


__all__ = ["CONVERTERS", "Converter", "UnsupportedConfig", "assemble", "check_not_quantized", "converter_for",
           "from_hf"]
