import random, sys
seed = int(sys.argv[1]); n = int(sys.argv[2])
R = random.Random(seed)
SEP = b"\n__ggml_vocab_test__\n"
pieces = [
 " ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2009", "\u180e", "\u0085", "\u2028",
 "a", "Hello", " world", "I'm", "'s", "'S", "'ll", "'re", "'VE", "don't", "'", "''",
 "0", "12", "123", "1234567", "3.14", "½", "²", "٣", "१२",
 "é", "ñ", "Führer", "ü", "\u0301", "e\u0301", "Ω", "ß",
 "日本語", "我想在apple工作", "한국어", "ไทย", "ကြ", "العربية", "עברית",
 "🦙", "😀", "👨‍👩‍👧", "🏳️‍🌈", "🫨", "\U0001F6DC", "\U00031350", "\U0002EBF0", "\U00011F50",
 "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>", "<fim_prefix>", "<fim_pad>",
 "<|im_start|>user\n", "def f(x):\n    return x", "if (a<b) { c++; }", "//", "/* */", "#include",
 "$", "+", "<=>", "^", "~", "|", "`", "!", "?", ".", ",", ";", ":", "-", "_", "(", ")", "[", "]", "{", "}",
 "...", "!!!", "?!", "—", "–", "“", "”", "‘", "’", "«", "»", "、", "。", "・",
 "▁", "Ġ", "ĊĊ", "\x00", "\x01", "\x7f", "\u200b", "\ufeff", "\ufffd",
]
def rand_text():
    k = R.randint(0, 12)
    s = "".join(R.choice(pieces) for _ in range(k))
    return s.encode("utf-8")
def rand_bytes():
    k = R.randint(1, 20)
    out = bytearray()
    for _ in range(k):
        r = R.random()
        if r < 0.5: out += bytes([R.randint(0, 255)])
        else: out += R.choice(pieces).encode()
    return bytes(out)
def llama_bad(b):
    # llama.cpp aborts on code points > 0x10FFFF: skip those inputs
    i = 0
    while i < len(b):
        c = b[i]
        if c < 0x80: i += 1; continue
        if not (c & 0x40): i += 1; continue
        if not (c & 0x20):
            if i+1 < len(b) and (b[i+1] & 0xc0) == 0x80: i += 2
            else: i += 1
            continue
        if not (c & 0x10):
            if i+2 < len(b) and all((x & 0xc0) == 0x80 for x in b[i+1:i+3]): i += 3
            else: i += 1
            continue
        if not (c & 0x08):
            if i+3 < len(b) and all((x & 0xc0) == 0x80 for x in b[i+1:i+4]):
                cp = ((c & 7) << 18) | ((b[i+1] & 0x3f) << 12) | ((b[i+2] & 0x3f) << 6) | (b[i+3] & 0x3f)
                if cp > 0x10FFFF: return True
                i += 4
            else: i += 1
            continue
        i += 1
    return False
out = bytearray()
cnt = 0
while cnt < n:
    t = rand_text() if R.random() < 0.6 else rand_bytes()
    if SEP[1:-1] in t or llama_bad(t): continue
    out += t + SEP
    cnt += 1
sys.stdout.buffer.write(bytes(out))
