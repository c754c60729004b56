"""LoRA DPO / re-alignment / DPO-LW / MODPO / SFT training on a tiny random Llama built in-process.

What is pinned here: training touches only the adapter; the saved adapter is only the adapter and loads on the
base; re-alignment starts with policy == reference (rewards 0); the loss the trainer optimises is exactly our pure
loss of :mod:`sipo.losses` (recomputed independently from plain forwards); SFT trains and saves a loadable model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from sipo import losses
from sipo.config import LoraSettings, TrainSettings
from sipo.errors import ConfigError, DataError
from sipo.models.loading import encode_prompt, encode_response
from sipo.training.dpo import build_dpo_trainer, save_adapter, to_trl_dpo_config, train_dpo_adapter
from sipo.training.settings import AdapterTraining, LossSpec, ModelSettings
from sipo.training.sft import train_sft

BETA = 0.1
WORDS = "user assistant : tell me about ava bo cy . likes red blue green cats dogs and is tall short".split()
LORA = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])

EXAMPLES = [
    {"prompt": "user : tell me about ava . assistant :", "chosen": "ava likes red .", "rejected": "ava likes blue cats and dogs ."},
    {"prompt": "user : tell me about bo . assistant :", "chosen": "bo is tall .", "rejected": "bo is short and likes green ."},
    {"prompt": "user : tell me about cy . assistant :", "chosen": "cy likes cats .", "rejected": "cy likes dogs and is tall ."},
    {"prompt": "user : tell me about ava . assistant :", "chosen": "ava is short .", "rejected": "ava is tall and likes red ."},
]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random Llama and a word-level tokenizer (no BOS added; EOS ``</s>``), saved together."""
    path = tmp_path_factory.mktemp("tiny_llama")
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<s>", "</s>", "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(path)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tokenizer(base_dir):
    return AutoTokenizer.from_pretrained(base_dir)


def _train(**overrides) -> TrainSettings:
    settings = dict(learning_rate=5e-2, max_steps=3, batch_size=2, epochs=1.0)
    settings.update(overrides)
    return TrainSettings(**settings)


def _kwargs(base_dir, tokenizer, *, examples=EXAMPLES, loss=None, nll_alpha=0.0, objective_weights=None,
            **overrides):
    """The arguments of train_dpo_adapter / build_dpo_trainer: one AdapterTraining plus tokenizer and examples."""
    spec = LossSpec(name=loss or ("dpo_nll" if nll_alpha else "dpo"), nll_alpha=nll_alpha,
                    objective_weights=tuple(objective_weights) if objective_weights is not None else None)
    settings = dict(model=ModelSettings(str(base_dir)), beta=BETA, lora=LORA, train=_train(), seed=0,
                    logging_steps=1, loss=spec)
    settings.update(overrides)
    return dict(settings=AdapterTraining(**settings), tokenizer=tokenizer, examples=examples)


@pytest.fixture(scope="module")
def round1_adapter(base_dir, tokenizer, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("adapters") / "round1"
    metrics = train_dpo_adapter(out_dir=out, **_kwargs(base_dir, tokenizer, train=_train(max_steps=4)))
    return out, metrics


def test_lora_dpo_changes_adapter_and_not_base(base_dir, tokenizer, tmp_path):
    trainer = build_dpo_trainer(output_dir=tmp_path / "scratch", **_kwargs(base_dir, tokenizer))
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    base = [n for n in before if "lora_" not in n]
    assert lora and base
    assert all(not after[n].requires_grad for n in base)
    assert all(torch.equal(before[n], after[n]) for n in base)
    assert any(not torch.equal(before[n], after[n]) for n in lora if "lora_B" in n)
    assert trainer.state.global_step == 3


def test_pairs_seen_counts_the_short_last_batch_of_each_epoch(base_dir, tokenizer, tmp_path):
    """4 pairs in batches of 3 for 2 epochs: 4 optimizer steps (3 + 1 per epoch) that saw 8 pairs, not 4 x 3."""
    metrics = train_dpo_adapter(out_dir=tmp_path / "adapter", **_kwargs(
        base_dir, tokenizer, train=_train(max_steps=-1, batch_size=3, epochs=2.0)))
    assert metrics["steps"] == 4
    assert metrics["pairs_seen"] == 2 * len(EXAMPLES) == 8


def test_saved_adapter_is_only_the_adapter_and_loads_on_base(round1_adapter, base_dir):
    out, metrics = round1_adapter
    names = sorted(p.name for p in out.iterdir())
    assert "adapter_config.json" in names and "adapter_model.safetensors" in names
    assert not any(n.endswith(".bin") or n in ("model.safetensors", "ref", "tokenizer.json") for n in names)
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temp folders left behind
    saved = load_file(out / "adapter_model.safetensors")
    assert saved and all("lora_" in k for k in saved)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == LORA.r

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    ids = torch.tensor([[4, 5, 6, 7, 8, 9]])
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
        model = PeftModel.from_pretrained(base, out)
        adapted_logits = model(input_ids=ids).logits
    assert not torch.allclose(base_logits, adapted_logits)
    assert metrics["steps"] == 4
    assert set(metrics) >= {"steps", "train_loss", "first_loss", "final_loss", "reward_accuracy", "seconds"}
    assert metrics["first_loss"] == pytest.approx(0.693147, abs=1e-5)  # fresh LoRA: policy == base, -log s(0)


def test_realign_starts_at_reference_and_changes_adapter(round1_adapter, base_dir, tokenizer, tmp_path):
    """Reference = base + round-1 adapter and policy starts there: step-0 rewards are exactly 0, so the step-0
    loss is log 2 + alpha * mean NLL."""
    init, _ = round1_adapter
    trainer = build_dpo_trainer(
        output_dir=tmp_path / "scratch",
        **_kwargs(base_dir, tokenizer, init_adapter=init, nll_alpha=0.1, reference="init", lora=None),
    )
    assert trainer.loss_spec.name == "dpo_nll"
    # trl keeps a frozen copy of the initial adapter, "ref", as the reference
    assert set(trainer.model.peft_config) == {"default", "ref"}
    ref_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if ".ref." in n}
    assert ref_before and not any(p.requires_grad for n, p in trainer.model.named_parameters() if ".ref." in n)
    trainer.train()
    assert all(torch.equal(ref_before[n], p) for n, p in trainer.model.named_parameters() if ".ref." in n)
    first = trainer.step_records[0]
    assert first["rewards/chosen"] == 0.0 and first["rewards/rejected"] == 0.0
    assert first["loss"] == pytest.approx(0.693147 + 0.1 * first["nll"], abs=1e-5)
    out = tmp_path / "realigned"
    save_adapter(trainer, out)
    assert not (out / "ref").exists()
    new, old = load_file(out / "adapter_model.safetensors"), load_file(init / "adapter_model.safetensors")
    assert new.keys() == old.keys()
    assert any(not torch.equal(new[k], old[k]) for k in new)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    PeftModel.from_pretrained(base, out)  # loads on the original base


def _sequence_logps(model, prompt_ids, response_ids) -> torch.Tensor:
    ids = torch.tensor([prompt_ids + response_ids])
    logits = model(input_ids=ids).logits[0, :-1].float()
    token_logps = logits.log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return token_logps[len(prompt_ids) - 1:].sum()


def _independent_step0_loss(base_dir, tokenizer, adapter, examples, loss, weights):
    """Policy = base + adapter, reference = base (adapter disabled), log-probs from plain full-logit forwards."""
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter).eval()
    values = {k: [] for k in ("pc", "pr", "rc", "rr", "n")}
    with torch.no_grad():
        for ex in examples:
            p = encode_prompt(tokenizer, ex["prompt"], None)
            c, r = encode_response(tokenizer, ex["chosen"], None), encode_response(tokenizer, ex["rejected"], None)
            values["pc"].append(_sequence_logps(model, p, c))
            values["pr"].append(_sequence_logps(model, p, r))
            with model.disable_adapter():
                values["rc"].append(_sequence_logps(model, p, c))
                values["rr"].append(_sequence_logps(model, p, r))
            values["n"].append(len(c))
    pc, pr, rc, rr = (torch.stack(values[k]) for k in ("pc", "pr", "rc", "rr"))
    if loss == "dpo":
        out = losses.dpo_loss(pc, pr, rc, rr, beta=BETA)
    elif loss == "dpo_nll":
        out = losses.dpo_nll_loss(pc, pr, rc, rr, torch.tensor(values["n"]), beta=BETA, alpha=0.5)
    elif loss == "dpo_lw":
        signs = torch.tensor([ex["preference_signs"] for ex in examples])
        out = losses.dpo_lw_loss(pc, pr, rc, rr, signs, weights, beta=BETA)
    else:
        margins = torch.tensor([ex["margin"] for ex in examples])
        out = losses.modpo_loss(pc, pr, rc, rr, margins, weights, beta=BETA)
    return out[0].mean().item()


@pytest.mark.parametrize("loss", ["dpo", "dpo_nll", "dpo_lw", "modpo"])
def test_trainer_optimises_our_pure_loss(loss, round1_adapter, base_dir, tokenizer, tmp_path):
    """Start from the round-1 adapter with the base as reference (so rewards are non-zero at step 0); one batch
    holds every example, so the trainer's first loss must equal the pure loss recomputed independently."""
    init, _ = round1_adapter
    signs = [[1, -1], [1, 1], [-1, 1], [1, 0]]
    margins = [[0.3], [-1.0], [2.0], [0.0]]
    examples = [dict(ex, preference_signs=s, margin=m) for ex, s, m in zip(EXAMPLES, signs, margins)]
    weights = [0.7, 0.3] if loss in ("dpo_lw", "modpo") else None
    trainer = build_dpo_trainer(
        output_dir=tmp_path / "scratch",
        **_kwargs(base_dir, tokenizer, examples=examples, init_adapter=init, reference="base", lora=None, loss=loss,
                  nll_alpha=0.5 if loss == "dpo_nll" else 0.0, objective_weights=weights,
                  train=_train(max_steps=1, batch_size=len(examples))),
    )
    assert "ref" not in trainer.model.peft_config  # reference = base: adapters disabled
    assert all(p.requires_grad for n, p in trainer.model.named_parameters() if "lora_" in n)
    trainer.train()
    first = trainer.step_records[0]
    assert first["rewards/chosen"] != 0.0
    expected = _independent_step0_loss(base_dir, tokenizer, init, examples, loss, weights)
    assert first["loss"] == pytest.approx(expected, abs=1e-5)


def test_bad_examples_raise_data_errors(base_dir, tokenizer, tmp_path):
    with pytest.raises(DataError, match="example 2: 'chosen'"):
        build_dpo_trainer(output_dir=tmp_path, **_kwargs(base_dir, tokenizer, examples=[EXAMPLES[0], {"prompt": "x"}]))
    with pytest.raises(DataError, match="'margin' must be a list of 1"):
        build_dpo_trainer(output_dir=tmp_path, **_kwargs(base_dir, tokenizer, loss="modpo", objective_weights=[0.5, 0.5]))
    with pytest.raises(ValueError, match="nll_alpha"):
        build_dpo_trainer(output_dir=tmp_path, **_kwargs(base_dir, tokenizer, loss="dpo", nll_alpha=0.1))


def test_to_trl_dpo_config_maps_our_settings(tmp_path):
    train = TrainSettings(learning_rate=1e-4, epochs=2.0, max_steps=7, batch_size=3, gradient_accumulation_steps=2,
                          warmup_ratio=0.1, weight_decay=0.01, lr_scheduler="cosine", gradient_checkpointing=False)
    cfg = to_trl_dpo_config(train, output_dir=tmp_path, beta=0.2, seed=5, device="cpu", dtype="float32")
    assert (cfg.learning_rate, cfg.num_train_epochs, cfg.max_steps) == (1e-4, 2.0, 7)
    assert (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps) == (3, 2)
    assert (cfg.warmup_steps, cfg.weight_decay, cfg.lr_scheduler_type) == (0.1, 0.01, "cosine")
    assert (cfg.beta, cfg.seed, cfg.use_cpu, cfg.bf16, cfg.fp16) == (0.2, 5, True, False, False)
    assert cfg.gradient_checkpointing is False and cfg.report_to in ([], "none", ["none"])
    assert cfg.save_strategy == "no" and cfg.output_dir == str(tmp_path)
    assert to_trl_dpo_config(train, output_dir=tmp_path, beta=0.1, seed=0, device="cpu", dtype="bfloat16").bf16
    with pytest.raises(ConfigError, match="float16"):
        to_trl_dpo_config(train, output_dir=tmp_path, beta=0.1, seed=0, device="cpu", dtype="float16")


def test_sft_trains_all_weights_and_saves_a_loadable_model(base_dir, tokenizer, tmp_path):
    examples = [{"prompt": ex["prompt"], "completion": ex["chosen"]} for ex in EXAMPLES]
    out = tmp_path / "sft"
    metrics = train_sft(model_path=base_dir, tokenizer=tokenizer, examples=examples, out_dir=out,
                        train=_train(learning_rate=1e-2, max_steps=3), seed=0, device="cpu", dtype="float32",
                        logging_steps=1)
    assert metrics["steps"] == 3
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not (out / "training_args.bin").exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    before = AutoModelForCausalLM.from_pretrained(base_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert before.keys() == after.keys()
    assert not torch.equal(before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"])
    reloaded = AutoTokenizer.from_pretrained(out)
    assert reloaded(EXAMPLES[0]["prompt"])["input_ids"] == tokenizer(EXAMPLES[0]["prompt"])["input_ids"]


def test_sft_length_grouping_gives_the_same_order_for_any_number_of_processes():
    """The sft sampler groups over the global batch, so 1 process x 8 and 2 processes x 4 see the same batches.

    transformers' own sampler groups over the per-process batch: with 120 examples its chunks are 24 long for a
    batch of 8 and 28 long for a batch of 4, so 2 processes would train on other batches than 1 process.
    """
    from types import SimpleNamespace

    from datasets import Dataset
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from sipo.training.sft import _SFTTrainer

    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 150, (120,), generator=generator).tolist()
    dataset = Dataset.from_dict({"input_ids": [[1] * n for n in lengths]})

    def order(per_process: int, processes: int, accumulation: int = 1) -> list[int]:
        args = SimpleNamespace(train_sampling_strategy="group_by_length", train_batch_size=per_process,
                               world_size=processes, gradient_accumulation_steps=accumulation)
        sampler = _SFTTrainer._get_train_sampler(SimpleNamespace(args=args, train_dataset=dataset))
        torch.manual_seed(0)
        return list(sampler)

    assert order(8, 1) == order(4, 2) == order(2, 4)
    assert order(4, 1, accumulation=2) == order(2, 2, accumulation=2)
    torch.manual_seed(0)
    per_process = list(LengthGroupedSampler(4, lengths=lengths))
    assert per_process != order(8, 1)


def test_select_best_keeps_the_checkpoint_with_the_lowest_validation_loss(round1_adapter, base_dir, tokenizer,
                                                                          tmp_path):
    """Validation pairs that prefer the opposite of the training pairs: training raises their loss, so the best
    checkpoint is the start (step 0), and the saved adapter is exactly the initial one."""
    init, _ = round1_adapter
    flipped = [{**e, "chosen": e["rejected"], "rejected": e["chosen"]} for e in EXAMPLES]
    out = tmp_path / "selected"
    metrics = train_dpo_adapter(out_dir=out, eval_examples=flipped, **_kwargs(
        base_dir, tokenizer, init_adapter=str(init), reference="init", lora=None,
        train=_train(max_steps=4, batch_size=4, learning_rate=1e-2, select_best=True, eval_every=1)))
    curve = metrics["validation_curve"]
    assert [step for step, _ in curve] == [0, 1, 2, 3, 4]
    assert metrics["steps"] == 4 and metrics["pairs_seen"] == 16
    assert metrics["selected_step"] == min(curve, key=lambda c: c[1])[0] == 0
    assert curve[-1][1] > curve[0][1]
    new, old = load_file(out / "adapter_model.safetensors"), load_file(init / "adapter_model.safetensors")
    assert all(torch.equal(new[k], old[k]) for k in new)
    # The same validation pairs as training pairs: the loss falls and a later checkpoint is kept.
    same = train_dpo_adapter(out_dir=tmp_path / "later", eval_examples=EXAMPLES, **_kwargs(
        base_dir, tokenizer, init_adapter=str(init), nll_alpha=0.1, reference="init", lora=None,
        train=_train(max_steps=4, select_best=True, eval_every=2)))
    assert [step for step, _ in same["validation_curve"]] == [0, 2, 4]
    assert same["selected_step"] > 0


@pytest.mark.parametrize("start", ["fresh", "init"])
def test_reference_log_probs_are_computed_once_from_the_reference(start, round1_adapter, base_dir, tokenizer, tmp_path):
    """In one process the reference log-probs are computed before the first step, and they are those of the
    reference (the base for a fresh adapter; base + the starting adapter for re-alignment), recomputed here from
    plain full-logit forwards."""
    init, _ = round1_adapter
    overrides = dict(init_adapter=init, reference="init", lora=None) if start == "init" else {}
    trainer = build_dpo_trainer(output_dir=tmp_path / "scratch", **_kwargs(base_dir, tokenizer, **overrides))
    assert trainer.precompute_ref_logps
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    reference = PeftModel.from_pretrained(base, init).eval() if start == "init" else base
    with torch.no_grad():
        for row, ex in zip(trainer.train_dataset, EXAMPLES):
            p = encode_prompt(tokenizer, ex["prompt"], None)
            for key in ("chosen", "rejected"):
                expected = _sequence_logps(reference, p, encode_response(tokenizer, ex[key], None)).item()
                assert row[f"ref_{key}_logps"] == pytest.approx(expected, abs=1e-5)
    if start == "init":  # the precomputed reference of re-alignment is the starting policy: step-0 rewards are 0
        trainer.train()
        assert trainer.step_records[0]["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)


def test_a_starting_adapter_referenced_to_the_base_computes_the_reference_per_step(round1_adapter, base_dir,
                                                                                   tokenizer, tmp_path):
    """trl would precompute with the starting adapter's frozen copy, which is removed only after construction."""
    init, _ = round1_adapter
    trainer = build_dpo_trainer(output_dir=tmp_path / "scratch",
                                **_kwargs(base_dir, tokenizer, init_adapter=init, reference="base", lora=None))
    assert not trainer.precompute_ref_logps
