"""The reward-model judge on tiny random sequence classifiers saved under tmp_path (safetensors unless stated).

Every expected score is computed independently: one sequence at a time through the saved model's own ``forward``
(no padding at all), then ``sign * (raw - shift) / scale`` by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

import sipo.scoring.reward_model as rm
from sipo.config import EvalStageConfig, ModelConfig, PipelineConfig, RewardModelConfig, RewardModelSpec
from sipo.errors import ConfigError
from sipo.models.loading import build_tokenizer
from sipo.scoring.reward_model import (
    BEAVER_TEMPLATE,
    DPA_TEMPLATE,
    RewardModelJudge,
    format_reward_input,
    last_token_indices,
    pad_right,
    safe_rlhf_normalizer,
    transform_scores,
)

PROMPTS = ["Hi.", "Tell me about the weather in a long and winding sentence, please.", "Why?", "What is 2+2?",
           "A {response} in braces."]
RESPONSES = ["Hello! How can I help you today?", "Sunny.", "Because the sky scatters blue light more than red.",
             "4", ""]


def tiny_config(tokenizer, num_labels: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=512, initializer_range=0.2, num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )


def save_classifier(folder: Path, num_labels: int, seed: int, tokenizer=None) -> LlamaForSequenceClassification:
    """A random ``LlamaForSequenceClassification`` and a byte tokenizer saved in ``folder``; returns the model."""
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer("byte")
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(tiny_config(tokenizer, num_labels)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def make_cfg(objectives, models, *, allow_pickle=False, **reward_model) -> PipelineConfig:
    cfg = PipelineConfig(run_dir="unused", objectives=list(objectives))
    cfg.model = ModelConfig(name_or_path="unused", allow_pickle=allow_pickle)
    cfg.eval = EvalStageConfig(judge="reward_model", reward_model=RewardModelConfig(models=list(models), **reward_model))
    return cfg


@torch.no_grad()
def reference_raw(model, tokenizer, prompt_format: str) -> torch.Tensor:
    """Head outputs of each (prompt, response), one unpadded sequence at a time. Shape: (n, num_labels)."""
    rows = []
    for prompt, response in zip(PROMPTS, RESPONSES):
        ids = tokenizer(format_reward_input(tokenizer, prompt, response, prompt_format))["input_ids"]
        rows.append(model(input_ids=torch.tensor([ids])).logits[0].float())
    return torch.stack(rows)


# ---------------------------------------------------------------- pure helpers


def test_transform_scores_hand_values():
    """(s - 10) / 20 at s = 30, 10, -10 is 1, 0, -1; sign -1 flips it (harmlessness = -cost)."""
    raw = torch.tensor([30.0, 10.0, -10.0])
    torch.testing.assert_close(transform_scores(raw, shift=10.0, scale=20.0), torch.tensor([1.0, 0.0, -1.0]))
    torch.testing.assert_close(transform_scores(raw, sign=-1.0, shift=10.0, scale=20.0), torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(transform_scores(raw), raw)


def test_last_token_indices_and_pad_right():
    """Rows [5 6 7], [8]: right padding with 0 -> mask [1 1 1], [1 0 0]; last tokens at 2 and 0."""
    input_ids, mask = pad_right([[5, 6, 7], [8]], pad_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert last_token_indices(mask).tolist() == [2, 0]
    assert last_token_indices(torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])).tolist() == [3, 3]
    with pytest.raises(ValueError):
        last_token_indices(torch.tensor([[0, 0]]))


def test_prompt_formats():
    """Each format's text, written out by hand; braces inside the texts are not placeholders."""
    assert format_reward_input(None, "hello", "Hi!", "beaver") == "BEGINNING OF CONVERSATION: USER: hello ASSISTANT:Hi!"
    assert format_reward_input(None, "p", "r", "plain") == "p\nr"
    assert format_reward_input(None, "p", "r", "dpa") == DPA_TEMPLATE.replace("{prompt}", "p").replace("{response}", "r")
    assert format_reward_input(None, "p", "r", "dpa").endswith("User: p\n\nAssistant: r [/INST]")
    assert format_reward_input(None, "a {response} b", "{prompt}", "<{prompt}|{response}>") == "<a {response} b|{prompt}>"
    assert BEAVER_TEMPLATE.endswith("ASSISTANT:{response}")
    tokenizer = build_tokenizer("byte")
    assert format_reward_input(tokenizer, "p", "r", "chat") == "p\nr"  # no chat template: plain
    tokenizer.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    assert format_reward_input(tokenizer, "p", "r", "chat") == "<user>p<assistant>r"
    with pytest.raises(ConfigError, match="prompt_format"):
        format_reward_input(None, "p", "r", "alpaca")


def test_safe_rlhf_normalizer():
    """mean 1, var 4 (std 2): reward -> (s - 1) / 2 = [0.5, -0.5] at s = [2, 0]; cost -> s / 2 = [1, 0]."""
    scores = torch.tensor([[2.0], [0.0]])
    reward = safe_rlhf_normalizer(SimpleNamespace(do_normalize=True, score_type="reward", mean=[1.0], var=[4.0]))
    cost = safe_rlhf_normalizer(SimpleNamespace(do_normalize=True, score_type="cost", mean=[1.0], var=[4.0]))
    torch.testing.assert_close(reward(scores), torch.tensor([[0.5], [-0.5]]))
    torch.testing.assert_close(cost(scores), torch.tensor([[1.0], [0.0]]))
    assert safe_rlhf_normalizer(SimpleNamespace(do_normalize=False)) is None


# ---------------------------------------------------------------- scoring


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batched_scores_equal_one_at_a_time_forward(tmp_path, padding_side):
    """Five inputs of different lengths in batches of 2 (padding in every batch) give the unpadded scores of the
    configured heads, whatever the tokenizer's own padding side."""
    tokenizer = build_tokenizer("byte")
    tokenizer.padding_side = padding_side
    model = save_classifier(tmp_path / "rm", num_labels=5, seed=0, tokenizer=tokenizer)
    cfg = make_cfg(["correctness", "verbosity"],
                   [RewardModelSpec(name_or_path=str(tmp_path / "rm"), heads={"correctness": 1, "verbosity": 4})],
                   prompt_format="beaver", batch_size=2)
    judge = RewardModelJudge(cfg, "cpu")
    scores = judge.score(PROMPTS, RESPONSES)
    expected = reference_raw(model, tokenizer, "beaver")
    assert list(scores) == ["correctness", "verbosity"]
    torch.testing.assert_close(torch.tensor(scores["correctness"]), expected[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(scores["verbosity"]), expected[:, 4], atol=1e-5, rtol=0)
    assert judge.models[0].model.config.pad_token_id == tokenizer.pad_token_id
    assert len(set(scores["correctness"])) == len(PROMPTS)  # distinct inputs, distinct scores
    assert judge.score([], []) == {"correctness": [], "verbosity": []}


def test_tokenizer_without_pad_token_pads_with_eos(tmp_path):
    """A tokenizer with no pad token gets its EOS token as pad (also in model.config); scores are unchanged."""
    tokenizer = build_tokenizer("byte")
    model = save_classifier(tmp_path / "rm", num_labels=1, seed=1, tokenizer=tokenizer)
    config_file = tmp_path / "rm" / "tokenizer_config.json"
    settings = json.loads(config_file.read_text())
    settings.pop("pad_token", None)
    config_file.write_text(json.dumps(settings))
    cfg = make_cfg(["helpfulness"], [RewardModelSpec(name_or_path=str(tmp_path / "rm"), heads={"helpfulness": 0})],
                   prompt_format="plain", batch_size=3)
    judge = RewardModelJudge(cfg, "cpu")
    loaded = judge.models[0]
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token
    assert loaded.model.config.pad_token_id == loaded.tokenizer.eos_token_id
    expected = reference_raw(model, tokenizer, "plain")[:, 0]
    torch.testing.assert_close(torch.tensor(judge.score(PROMPTS, RESPONSES)["helpfulness"]), expected, atol=1e-5, rtol=0)


def test_reward_and_cost_models_transform_and_sign(tmp_path):
    """Two single-head models; shift 10, scale 20: helpfulness = (reward - 10) / 20, harmlessness = -(cost - 10) / 20."""
    reward_model = save_classifier(tmp_path / "reward", num_labels=1, seed=2)
    cost_model = save_classifier(tmp_path / "cost", num_labels=1, seed=3)
    cfg = make_cfg(
        ["helpfulness", "harmlessness"],
        [RewardModelSpec(name_or_path=str(tmp_path / "reward"), heads={"helpfulness": 0}),
         RewardModelSpec(name_or_path=str(tmp_path / "cost"), heads={"harmlessness": 0}, sign={"harmlessness": -1.0})],
        prompt_format="beaver", shift=10.0, scale=20.0, batch_size=4,
    )
    scores = RewardModelJudge(cfg, "cpu").score(PROMPTS, RESPONSES)
    tokenizer = build_tokenizer("byte")
    reward = reference_raw(reward_model, tokenizer, "beaver")[:, 0]
    cost = reference_raw(cost_model, tokenizer, "beaver")[:, 0]
    torch.testing.assert_close(torch.tensor(scores["helpfulness"]), (reward - 10) / 20, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.tensor(scores["harmlessness"]), -(cost - 10) / 20, atol=1e-6, rtol=0)


def test_long_inputs_are_cut_at_max_length(tmp_path):
    """max_length 12: every input keeps its first 12 tokens ([BOS] + 11 bytes) and is scored at the 12th."""
    tokenizer = build_tokenizer("byte")
    model = save_classifier(tmp_path / "rm", num_labels=1, seed=10, tokenizer=tokenizer)
    cfg = make_cfg(["helpfulness"], [RewardModelSpec(name_or_path=str(tmp_path / "rm"), heads={"helpfulness": 0})],
                   prompt_format="plain", max_length=12, batch_size=2)
    scores = RewardModelJudge(cfg, "cpu").score(PROMPTS, RESPONSES)["helpfulness"]
    with torch.no_grad():
        expected = [model(input_ids=torch.tensor([tokenizer(f"{p}\n{r}")["input_ids"][:12]])).logits[0, 0].item()
                    for p, r in zip(PROMPTS, RESPONSES)]
    assert scores == pytest.approx(expected, abs=1e-5)


def test_each_model_is_loaded_once(tmp_path, monkeypatch):
    """Two score() calls over two models load each model exactly once; a model scoring no objective is not loaded."""
    for name, seed in (("a", 4), ("b", 5), ("unused", 6)):
        save_classifier(tmp_path / name, num_labels=2, seed=seed)
    calls = []
    real_load = rm.load_reward_model

    def counting_load(name_or_path, *args, **kwargs):
        calls.append(Path(name_or_path).name)
        return real_load(name_or_path, *args, **kwargs)

    monkeypatch.setattr(rm, "load_reward_model", counting_load)
    cfg = make_cfg(["x", "y"], [RewardModelSpec(name_or_path=str(tmp_path / "a"), heads={"x": 0, "y": 1}),
                                RewardModelSpec(name_or_path=str(tmp_path / "unused"), heads={"z": 0})],
                   prompt_format="plain", batch_size=2)
    judge = RewardModelJudge(cfg, "cpu")
    first = judge.score(PROMPTS, RESPONSES)
    second = judge.score(PROMPTS[:2], RESPONSES[:2])
    assert calls == ["a"]
    for objective, values in first.items():  # other batches, other padding: equal up to float rounding
        assert second[objective] == pytest.approx(values[:2], abs=1e-5)


# ---------------------------------------------------------------- safe-rlhf (beaver) checkpoints


@pytest.mark.parametrize("bias", [False, True])
def test_safe_rlhf_score_head_checkpoint_loads_without_remote_code(tmp_path, bias):
    """A beaver-style folder (architectures [LlamaForScore], head saved as score_head.*) scores like the classifier it
    was made from, plus the head bias when the config says bias: true."""
    tokenizer = build_tokenizer("byte")
    torch.manual_seed(7)
    source = LlamaForSequenceClassification(tiny_config(tokenizer, 1)).eval()
    state = {("score_head." + k[len("score."):] if k.startswith("score.") else k): v.contiguous()
             for k, v in source.state_dict().items()}
    head_bias = torch.tensor([0.75])
    if bias:
        state["score_head.bias"] = head_bias
    folder = tmp_path / "beaver"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = source.config.to_dict()
    for name in ("id2label", "label2id", "num_labels"):
        config.pop(name, None)
    config.update(architectures=["LlamaForScore"], score_dim=1, bias=bias, score_type="cost", do_normalize=False)
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(folder)

    cfg = make_cfg(["harmlessness"], [RewardModelSpec(name_or_path=str(folder), heads={"harmlessness": 0},
                                                      sign={"harmlessness": -1.0})],
                   prompt_format="beaver", batch_size=2)
    judge = RewardModelJudge(cfg, "cpu")
    assert cfg.model.trust_remote_code is False
    expected = reference_raw(source, tokenizer, "beaver")[:, 0] + (head_bias if bias else 0.0)
    torch.testing.assert_close(torch.tensor(judge.score(PROMPTS, RESPONSES)["harmlessness"]), -expected,
                               atol=1e-5, rtol=0)


# ---------------------------------------------------------------- refusals


def test_pickle_only_checkpoint_is_refused_unless_allowed(tmp_path):
    """A folder with only pytorch_model.bin is refused naming model.allow_pickle; with allow_pickle it loads."""
    model = save_classifier(tmp_path / "rm", num_labels=1, seed=8)
    (tmp_path / "rm" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "rm" / "pytorch_model.bin")
    spec = RewardModelSpec(name_or_path=str(tmp_path / "rm"), heads={"helpfulness": 0})
    with pytest.raises(ConfigError, match="model.allow_pickle"):
        RewardModelJudge(make_cfg(["helpfulness"], [spec], prompt_format="plain"), "cpu")
    judge = RewardModelJudge(make_cfg(["helpfulness"], [spec], prompt_format="plain", allow_pickle=True), "cpu")
    expected = reference_raw(model, build_tokenizer("byte"), "plain")[:, 0]
    torch.testing.assert_close(torch.tensor(judge.score(PROMPTS, RESPONSES)["helpfulness"]), expected, atol=1e-5, rtol=0)


def test_missing_model_folder_names_the_key(tmp_path):
    spec = RewardModelSpec(name_or_path=str(tmp_path / "nowhere"), heads={"helpfulness": 0})
    with pytest.raises(ConfigError, match=r"eval\.reward_model\.models\[0\]\.name_or_path"):
        RewardModelJudge(make_cfg(["helpfulness"], [spec]), "cpu")
    with pytest.raises(ConfigError, match=r"eval\.reward_model\.models"):
        RewardModelJudge(make_cfg(["helpfulness"], []), "cpu")


def test_bad_heads_are_refused(tmp_path):
    """A head beyond the model's outputs, an objective nobody scores, or one scored twice, is a ConfigError."""
    save_classifier(tmp_path / "rm", num_labels=2, seed=9)
    path = str(tmp_path / "rm")
    with pytest.raises(ConfigError, match=r"models\[0\]\.heads\.b': head 2 does not exist"):
        RewardModelJudge(make_cfg(["a", "b"], [RewardModelSpec(name_or_path=path, heads={"a": 0, "b": 2})]), "cpu")
    with pytest.raises(ConfigError, match="no reward model head scores objective 'b'"):
        RewardModelJudge(make_cfg(["a", "b"], [RewardModelSpec(name_or_path=path, heads={"a": 0})]), "cpu")
    with pytest.raises(ConfigError, match="already scored"):
        RewardModelJudge(make_cfg(["a"], [RewardModelSpec(name_or_path=path, heads={"a": 0}),
                                          RewardModelSpec(name_or_path=path, heads={"a": 1})]), "cpu")
    with pytest.raises(ConfigError, match=r"sign\.c"):
        RewardModelJudge(make_cfg(["a"], [RewardModelSpec(name_or_path=path, heads={"a": 0}, sign={"c": -1})]), "cpu")


def test_causal_lm_is_not_a_reward_model(tmp_path):
    """A causal LM checkpoint has no trained head: refused instead of scoring with a random head."""
    tokenizer = build_tokenizer("byte")
    LlamaForCausalLM(tiny_config(tokenizer, 1)).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    spec = RewardModelSpec(name_or_path=str(tmp_path / "lm"), heads={"helpfulness": 0})
    with pytest.raises(ConfigError, match="no trained reward head"):
        RewardModelJudge(make_cfg(["helpfulness"], [spec]), "cpu")


def test_label_stage_fills_missing_labels_with_the_reward_model(tmp_path):
    """One dataset per objective (HH-RLHF helpful and harmless rows): each pair misses the other objective's label;
    ``data.fill_judge: reward_model`` fills it with the reward model that scores that objective, preferring the
    response it scores higher, and records it in ``filled``. Expected labels come from the judge called directly."""
    from sipo.artifacts import RunDir
    from sipo.data import load_pairs, make_splits, write_splits
    from sipo.pipeline import StageContext, StageSpec
    from sipo.stages import label

    root = Path(__file__).resolve().parents[2]
    for name, seed in (("helpful_rm", 21), ("harmless_rm", 22)):
        save_classifier(tmp_path / name, num_labels=1, seed=seed)
    objectives = ["helpful", "harmless"]
    cfg = make_cfg(objectives, [RewardModelSpec(name_or_path=str(tmp_path / "helpful_rm"), heads={"helpful": 0}),
                                RewardModelSpec(name_or_path=str(tmp_path / "harmless_rm"), heads={"harmless": 0})],
                   prompt_format="plain", max_length=256)
    cfg.run_dir = str(tmp_path / "run")
    cfg.data.source = "jsonl"
    cfg.data.path = {"helpful": str(root / "tests/fixtures/hh_helpful_sample.jsonl"),
                     "harmless": str(root / "tests/fixtures/hh_harmless_sample.jsonl")}
    cfg.data.fill_judge = "reward_model"
    cfg.data.validation_fraction = 0.0
    splits = make_splits(load_pairs(cfg), objectives, conflict_fraction=0.6, test_fraction=0.2,
                         validation_fraction=0.0, seed=0)
    run_dir = RunDir(cfg.run_dir)
    write_splits(splits, run_dir.stage_dir("prepare"))
    ctx = StageContext(cfg=cfg, run_dir=run_dir, stage=StageSpec("label"), device="cpu")
    counts = label.run(ctx)

    pairs = {p["pair_id"]: p for p in map(json.loads, (run_dir.path("label") / "pairs.jsonl").open())}
    union = {p.pair_id: p for o in objectives for p in splits.train[o]}
    assert set(pairs) == set(union) and len(pairs) == 48
    judge = RewardModelJudge(cfg, "cpu")
    for pid, original in union.items():
        (missing,) = original.unlabelled
        scores = judge.score([original.prompt] * 2, [original.response_a, original.response_b])[missing]
        expected = "a" if scores[0] > scores[1] else "b" if scores[1] > scores[0] else None
        row = pairs[pid]
        assert row["filled"] == [missing] and row["unlabelled"] == []
        assert row["preferred"][missing] == expected
        assert row["preferred"] == {**original.preferred, missing: expected}
    assert counts["filled"] == {"helpful": 25, "harmless": 23}
    assert counts["conflicting_pairs"] == sum(
        len({w for w in p["preferred"].values() if w is not None}) > 1 for p in pairs.values())
    conflict = list(map(json.loads, (run_dir.path("label") / "train_conflict.jsonl").open()))
    assert len(conflict) == counts["train_conflict_prompts"] == counts["train_conflict_prompts_available"]
    assert all(p["conflict"] for p in conflict)
