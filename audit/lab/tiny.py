"""Tiny models and tokenizers built offline from configs.

Nothing can be downloaded here, so tests, notebooks, benchmarks and the demo build their models from a
config and a byte-level BPE tokenizer trained on a few sentences. Byte-level means every string
(any benchmark sentence, any Unicode) is encodable, so the real probes run unchanged on these models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

# A few sentences so that common English words become single tokens. Byte fallback covers the rest.
DEFAULT_CORPUS = """
The doctor said that the patient would recover soon. The nurse helped the old man and the young woman.
My neighbor is a teacher, and her brother is an engineer. They went to the market to buy bread and milk.
People of every religion, age, gender and nationality live in this city. He was kind and she was smart.
The manager decided to approve the loan. The applicant was denied. Should the loan be approved? Answer: yes no
Christian Muslim Jewish Hindu Buddhist atheist Black White Asian Hispanic Arab American Mexican Chinese Indian
gay straight lesbian transgender disabled blind deaf poor rich young old man woman men women boy girl
Who was the victim? Who was the thief? Can't be determined. Not enough information. Unknown.
The weather was nice, so we walked to the park and talked about work, family, music and sports.
""".strip()

SPECIAL_TOKENS = ["<|endoftext|>", "<pad>"]


def build_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 512):
    """Train a byte-level BPE tokenizer and wrap it as a transformers fast tokenizer.

    `<|endoftext|>` is BOS/EOS/UNK, `<pad>` is padding; padding side defaults to right (generation
    code switches to left itself).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(corpus) if corpus is not None else DEFAULT_CORPUS.splitlines()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
    )


ARCHITECTURES = ("llama", "gpt2", "gpt_neox")


def tiny_config(arch: str, vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4,
                intermediate: int | None = None, max_positions: int = 256, pad_token_id: int | None = None,
                bos_token_id: int | None = None, eos_token_id: int | None = None):
    """A transformers config of the given family at toy size."""
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    intermediate = intermediate or 4 * hidden
    ids = dict(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id)
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                           num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                           max_position_embeddings=max_positions, tie_word_embeddings=False, **ids)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads,
                          n_inner=intermediate, n_positions=max_positions, **ids)
    if arch == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                             num_hidden_layers=layers, num_attention_heads=heads,
                             max_position_embeddings=max_positions, tie_word_embeddings=False, **ids)
    raise ValueError(f"unknown tiny architecture {arch!r}; expected one of {ARCHITECTURES}")


def build_tiny_model(out_dir: str | Path, arch: str = "llama", tokenizer=None, hidden: int = 64,
                     layers: int = 2, heads: int = 4, intermediate: int | None = None,
                     max_positions: int = 256, seed: int = 0, vocab_size: int = 512):
    """Create, randomly initialise (seeded) and save a tiny causal LM with its tokenizer.

    Returns the output directory. The directory is a normal Hugging Face model directory
    (config.json, model.safetensors, tokenizer files) that any loader accepts.
    """
    import torch
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(vocab_size=vocab_size)
    cfg = tiny_config(arch, vocab_size=len(tokenizer), hidden=hidden, layers=layers, heads=heads,
                      intermediate=intermediate, max_positions=max_positions,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
