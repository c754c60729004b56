"""Multi-objective decoding (MOD) over LoRA adapters."""

from sipo.decoding.mod import combine_logprobs, mod_generate, mod_generate_reference

__all__ = ["combine_logprobs", "mod_generate", "mod_generate_reference"]
