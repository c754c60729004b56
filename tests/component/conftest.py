"""Tiny random models built in-process: a 2-layer, 32-wide Llama with a byte-level tokenizer, and random LoRA
adapters (non-zero B, so each adapter changes the model's outputs)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from sipo.models.adapters import AdapterBank
from sipo.models.loading import build_tokenizer

ADAPTER_SPECS = {
    # name: (rank, lora_alpha, target modules); "gamma" has another rank, scaling and set of target modules.
    "alpha": (4, 8, ["q_proj", "k_proj", "v_proj", "o_proj"]),
    "beta": (4, 8, ["q_proj", "k_proj", "v_proj", "o_proj"]),
    "gamma": (2, 2, ["q_proj", "v_proj", "down_proj"]),
}


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine the threads' spinning makes
    the tests several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer("byte")


@pytest.fixture(scope="session")
def tiny_model_template(tiny_tokenizer) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        initializer_range=0.2,  # peaked next-token distributions: greedy ties are unlikely
        pad_token_id=tiny_tokenizer.pad_token_id,
        bos_token_id=tiny_tokenizer.bos_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        pad_token_id=tiny_tokenizer.pad_token_id, eos_token_id=tiny_tokenizer.eos_token_id
    )
    return model


@pytest.fixture
def tiny_model(tiny_model_template) -> LlamaForCausalLM:
    """A fresh copy per test (peft injects adapters into the model it is given)."""
    return copy.deepcopy(tiny_model_template)


@pytest.fixture(scope="session")
def lora_adapters(tiny_model_template, tmp_path_factory) -> dict[str, Path]:
    """Random LoRA adapters saved as peft folders: ``{name: folder}``."""
    root = tmp_path_factory.mktemp("adapters")
    generator = torch.Generator().manual_seed(1)
    paths = {}
    for name, (rank, alpha, targets) in ADAPTER_SPECS.items():
        model = get_peft_model(
            copy.deepcopy(tiny_model_template),
            LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, task_type="CAUSAL_LM"),
        )
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                if "lora_" in param_name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        model.save_pretrained(root / name)
        paths[name] = root / name
    return paths


@pytest.fixture
def bank(tiny_model, lora_adapters) -> AdapterBank:
    return AdapterBank.load(tiny_model, lora_adapters)
