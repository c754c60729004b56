"""Multi-objective decoding (MOD) over LoRA adapters."""

from sipo.decoding.mod import ModGenerator, combine_logprobs, mod_generate, mod_generate_reference

__all__ = ["ModGenerator", "combine_logprobs", "mod_generate", "mod_generate_reference"]
