"""Tiny random models with a tokenizer trained on the fly: for tests and smoke runs, no download.

``build_tiny_model(path)`` writes a normal HF model folder (config, safetensors, tokenizer with a
chat template) that every stage can load like a real model.
"""

from __future__ import annotations

from pathlib import Path

CHATML_SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_CORPUS = [
    "Solve the problem step by step. The answer is: 42",
    "Jack had 5 apples and ate 2. How many apples are left? 5 - 2 = 3. The answer is: 3",
    "First, compute the total. Then divide by the number of people. Therefore each gets 4.",
    "Plan: add the numbers, then subtract. So 12 + 7 = 19 and 19 - 4 = 15. The answer is: 15",
    "What if the price doubled? Let x be the cost. Hence 2x = 10, thus x = 5.",
    "Question: a train travels 60 miles per hour for 3 hours. 60 * 3 = 180 miles.",
    "Reason step by step and finish with a last line of the form The answer is: <answer>.",
    "yes no true false A B C D E ( ) 0 1 2 3 4 5 6 7 8 9 + - * / = % $ , . : ?",
    "However, wait. Suppose we compare two approaches. Okay, note that basically we are done.",
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_tokenizer(vocab_size: int = 512, chat_template: str = CHATML_SMOLLM2):
    """A byte-level BPE tokenizer trained on a small corpus, with SmolLM2's special tokens and template.

    Like SmolLM2, the pad token is the end-of-turn token ``<|im_end|>`` (so masking pads by id is a bug).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = chat_template
    return fast


def build_tiny_model(
    path: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
    chat_template: str = CHATML_SMOLLM2,
) -> Path:
    """Write a random Llama-architecture model (GQA by default) and its tokenizer to ``path``.

    Returns the folder. Loads with ``AutoModelForCausalLM.from_pretrained(path)`` in well under a second.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tok = build_tiny_tokenizer(vocab_size, chat_template)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
