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

# Simplified copies of real chat templates (same turn markers and default system turns), for mask tests.
CHATML_QWEN25 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% if messages[0]['role'] != 'system' %}"
    "{{ '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: December 2023\\n"
    "Today Date: 26 Jul 2024\\n\\n<|eot_id|>' }}{% endif %}"
    "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
GEMMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

# name -> (template, extra special tokens, bos, eos, pad): mirrors each family's real special-token setup.
TEMPLATES = {
    "smollm2": (CHATML_SMOLLM2, [], "<|im_start|>", "<|im_end|>", "<|im_end|>"),
    "qwen2.5": (CHATML_QWEN25, [], "<|endoftext|>", "<|im_end|>", "<|endoftext|>"),
    "llama3": (LLAMA3, ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
               "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"),
    "gemma3": (GEMMA3, ["<bos>", "<pad>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<end_of_turn>", "<pad>"),
}


def build_tiny_tokenizer(vocab_size: int = 512, chat_template: str = CHATML_SMOLLM2):
    """A byte-level BPE tokenizer trained on a small corpus, with SmolLM2's special tokens and template.

    Like SmolLM2, the pad token is the end-of-turn token ``<|im_end|>`` (so masking pads by id is a bug).
    ``chat_template`` may also be a key of :data:`TEMPLATES` (``smollm2``, ``qwen2.5``, ``llama3``,
    ``gemma3``): the tokenizer then gets that family's special tokens, bos/eos/pad and template.
    """
    family = TEMPLATES.get(chat_template)
    if family is not None:
        chat_template, extra, bos, eos, pad = family
    else:
        extra, bos, eos, pad = [], "<|im_start|>", "<|im_end|>", "<|im_end|>"
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + extra,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
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
