"""Model and tokenizer loading, and LoRA adapters over one shared base model."""

from sipo.models.adapters import BASE, AdapterBank, LoraSoup, as_bank, interpolate_lora, lora_delta_weights
from sipo.models.loading import (
    build_random_model,
    build_tokenizer,
    encode_prompt,
    encode_prompt_response,
    encode_response,
    format_prompt,
    load_model,
    load_tokenizer,
)

__all__ = [
    "BASE",
    "AdapterBank",
    "LoraSoup",
    "as_bank",
    "build_random_model",
    "build_tokenizer",
    "encode_prompt",
    "encode_prompt_response",
    "encode_response",
    "format_prompt",
    "interpolate_lora",
    "load_model",
    "load_tokenizer",
    "lora_delta_weights",
]
