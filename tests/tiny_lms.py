"""Tiny random language models of the reranker families, built at test time and saved to a folder: a byte-level
BPE tokenizer (trained here, Qwen's pre-tokenizer, answer words as single tokens) with a chat template for the
causal LMs (Qwen3, Qwen2, Gemma), a Unigram tokenizer for T5, a WordPiece one for ModernBERT."""

from __future__ import annotations

import string
from pathlib import Path

from conftest import WORDS

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<bos>", "<eos>"]
ADDED = ["<think>", "</think>"]


def _bpe_tokenizer(max_length: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(WORDS), "yes no Yes No 1 0 true false", "Query Document Instruct Relevance query document"]
    corpus += [w for w in ("yes", "no", "Yes", "No") for _ in range(50)] + [" ".join(WORDS[i:]) for i in range(20)]
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus * 5, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", model_max_length=max_length, padding_side="left")
    fast.add_tokens(ADDED)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_causal_lm(path: Path, model_type: str = "qwen3", seed: int = 0, max_length: int = 1024) -> Path:
    """A 2-layer causal LM (``qwen3``, ``qwen2`` or ``gemma``) with a trained BPE tokenizer, saved to ``path``."""
    import torch
    import transformers

    tokenizer = _bpe_tokenizer(max_length)
    configs = {"qwen3": ("Qwen3Config", "Qwen3ForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
               "gemma": ("GemmaConfig", "GemmaForCausalLM")}
    config_cls, model_cls = (getattr(transformers, n) for n in configs[model_type])
    config = config_cls(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=max_length,
                        tie_word_embeddings=True, initializer_range=0.3, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model_cls(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_t5(path: Path, seed: int = 0) -> Path:
    """A 2-layer T5 (monoT5's shape) with a Unigram vocabulary that has ``▁true`` and ``▁false``."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -2.0) for w in (*WORDS, "true", "false", "Query:", "Document:", "Relevant:")]
    pieces += [(c, -5.0) for c in string.ascii_letters + string.digits + ".,;:!?'\"()-"]
    pieces += [("\u2581" + c, -6.0) for c in string.ascii_lowercase + string.digits]
    pieces += [("\u2581", -8.0)]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(pieces), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                      initializer_factor=3.0)
    T5ForConditionalGeneration(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_modernbert(path: Path, seed: int = 0) -> Path:
    """A 2-layer ModernBERT sequence classifier (gte-reranker-modernbert's architecture), one label."""
    import torch
    from conftest import _bert_vocab
    from transformers import BertTokenizer, ModernBertConfig, ModernBertForSequenceClassification

    vocab = _bert_vocab()
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=128)
    torch.manual_seed(seed)
    config = ModernBertConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, max_position_embeddings=128, num_labels=1,
                              pad_token_id=0, cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3,
                              global_attn_every_n_layers=2, local_attention=16, initializer_range=0.5)
    ModernBertForSequenceClassification(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
