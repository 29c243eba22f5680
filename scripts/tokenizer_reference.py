#!/usr/bin/env python3
"""Expected token ids for runtime/tests/tokenizer.rs, from two implementations independent of kiln.

Usage: python3 scripts/tokenizer_reference.py MODEL.gguf > ids.rs
(needs `pip install gguf regex tokenizers`; MODEL.gguf is SmolLM2-135M-Instruct.Q4_1.gguf, which
`kiln fetch-model` prints the path of).

The vocabulary, token types and merges are read with the `gguf` package. Each test string is then
encoded twice:
  1. a plain-Python GPT-2 BPE written here: control tokens cut out first (longest first), each
     digit split off on its own (SmolLM2's `smollm` pre-tokenizer), the GPT-2 pattern applied with
     the `regex` module, bytes mapped to GPT-2's printable alphabet, then pairs merged lowest rank
     first until none is left;
  2. the Python `tokenizers` package configured from the same vocabulary and merges (BPE, a
     Digits(individual_digits) + ByteLevel pre-tokenizer sequence, control tokens as special
     added tokens).
The script stops if the two disagree, and prints the cases as a Rust array to paste into the test.
"""
import sys
import unicodedata

import gguf
import regex

GPT2_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)

# (text, whether control-token text is parsed as control tokens)
CASES = [
    ("Hello, world!", False),
    ("What is the capital of France?", False),
    ("The capital of France is Paris.", False),
    ("1234567890 and 3.14159, 1e-9, 2024-11-23: 007", False),
    ("   leading spaces\tand\ttabs\n\n\nnewlines   \n  trailing   ", False),
    ("I'm sure you're right, they've said we'll go; she'd know it's DON'T", False),
    ("naïve café résumé Ünïcödé façade", False),
    ("日本語のテキスト、中文字符和한국어", False),
    ("emoji 🦀🚀👍🏽 family 👨‍👩‍👧 flag 🇫🇷!", False),
    ("math ∑∫√ ≠ ≤ ½ ² ³ ① Ⅻ ٣٤", False),
    ('fn main() { println!("{}", x[0] + y_1); } // done', False),
    ("\u00a0non-breaking\u2003em space\u3000ideographic \u200bzero width", False),
    ("e\u0301 combining, \u01c4 \u01c5 titlecase", False),
    ("tabs\t\t\tand\r\nCRLF\r\n", False),
    ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", False),
    ("    ", False),
    ("\n", False),
    (" \n \n ", False),
    ("\x00\x01\x7f control bytes", False),
    ("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n", True),
    ("<|im_start|>user\nhi<|im_end|>", False),
    ("mixed<|endoftext|>special <|im_end|> tokens<|im_start|>", True),
    ("a<|im_end|><|im_end|>b <repo_name> <|im_start|", True),
]


def rust_str(text):
    """A Rust string literal: printable characters as they are, the rest as `\\u{..}` escapes."""
    out = []
    for c in text:
        if c in '\\"':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif c != " " and unicodedata.category(c)[0] in "CZM":
            out.append("\\u{%x}" % ord(c))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def main():
    reader = gguf.GGUFReader(sys.argv[1])
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    merges = reader.fields["tokenizer.ggml.merges"].contents()
    vocab = {t: i for i, t in enumerate(tokens)}
    ranks = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
    controls = sorted((t for t, ty in zip(tokens, types) if ty == 3), key=len, reverse=True)
    byte_map = bytes_to_unicode()

    def bpe(word):
        parts = list(word)
        while len(parts) > 1:
            pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return [vocab[p] for p in parts]

    def plain(text):
        ids = []
        for piece in regex.split(r"(\p{N})", text):
            for word in GPT2_PATTERN.findall(piece):
                ids += bpe("".join(byte_map[b] for b in word.encode("utf-8")))
        return ids

    def ours(text, specials):
        if not specials:
            return plain(text)
        pattern = "(" + "|".join(regex.escape(c) for c in controls) + ")"
        ids = []
        for i, piece in enumerate(regex.split(pattern, text)):
            ids += [vocab[piece]] if i % 2 == 1 else plain(piece)
        return ids

    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    def hf(specials):
        tok = Tokenizer(models.BPE(vocab, [tuple(m.split(" ")) for m in merges]))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        if specials:
            tok.add_special_tokens([AddedToken(c, special=True, normalized=False) for c in controls])
        return tok

    hf_plain, hf_specials = hf(False), hf(True)
    print("// Generated by scripts/tokenizer_reference.py from SmolLM2-135M-Instruct.Q4_1.gguf; the plain-Python")
    print("// BPE there and the Python `tokenizers` package agree on every case.")
    print("const CASES: &[(&str, bool, &[u32])] = &[")
    for text, specials in CASES:
        a = ours(text, specials)
        b = (hf_specials if specials else hf_plain).encode(text, add_special_tokens=False).ids
        if a != b:
            sys.exit(f"the two references disagree on {text!r}:\n  plain Python {a}\n  tokenizers   {b}")
        print(f"    ({rust_str(text)}, {'true' if specials else 'false'}, &{a}),")
    print("];")


if __name__ == "__main__":
    main()
