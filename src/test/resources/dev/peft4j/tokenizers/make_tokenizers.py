#!/usr/bin/env python3
"""Writes the two hand-made tokenizer.json fixtures of this folder (plain Python, no library).

Every vocabulary entry and merge is typed below; nothing is trained or downloaded. See PROVENANCE.md.
Run from this folder: python3 make_tokenizers.py
"""
import json

SP = "\u2581"  # '▁', SentencePiece's word-boundary mark


def added(i, content):
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def write(path, tok):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=2)
        f.write("\n")


# ---- llama-bpe: the layout of Llama-2's tokenizer.json (byte-fallback BPE, '▁' for spaces), 64 tokens
special = ["<unk>", "<s>", "</s>"]                                                   # ids 0..2
byte_tokens = ["<0x0A>", "<0x21>", "<0x2C>", "<0x2E>", "<0x3F>", "<0xC3>", "<0xA9>", "<0x27>"]  # ids 3..10
chars = [SP, "a", "d", "e", "h", "l", "o", "p", "r", "t", "w", "n", "k", "i", "s", "c", "f", "g", "m", "u",
         "y", "b", "v"]                                                              # ids 11..33
merges = [  # rank order; each merge's result is the next id, 34..63
    SP + " t", SP + " h", "h e", SP + "t he", "l l", "e ll", SP + "h ell", SP + "hell o",
    SP + " w", "o r", SP + "w or", "l d", SP + "wor ld",
    "a d", SP + " ad", "a p", SP + "ad ap", "e r", "t er", SP + "adap ter",
    SP + " l", "o w", SP + "l ow", "r a", "n k", SP + " ra", SP + "ra nk", "i s", SP + " is", SP + " a"]
tokens = special + byte_tokens + chars + [m.replace(" ", "") for m in merges]
assert len(tokens) == len(set(tokens)) == 64, len(tokens)
vocab = {t: i for i, t in enumerate(tokens)}
for m in merges:
    assert all(part in vocab for part in m.split(" ")), m

write("llama-bpe/tokenizer.json", {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [added(i, t) for i, t in enumerate(special)],
    "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": SP},
        {"type": "Replace", "pattern": {"String": " "}, "content": SP}]},
    "pre_tokenizer": None,
    "post_processor": {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
    "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": SP}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
              "vocab": vocab, "merges": merges},
})

# ---- wordlevel: BERT-style special tokens around a WordLevel model, 14 tokens
words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", ".", "a", "dog", "?"]
write("wordlevel/tokenizer.json", {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [added(i, t) for i, t in enumerate(words[:5])],
    "normalizer": {"type": "Lowercase"},
    "pre_tokenizer": {"type": "Whitespace"},
    "post_processor": {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                 {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
        "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                           "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
    "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
    "model": {"type": "WordLevel", "vocab": {t: i for i, t in enumerate(words)}, "unk_token": "[UNK]"},
})
