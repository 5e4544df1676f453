# Builds extra.inp: hand-picked cases + seeded random mixes (gen.py), in
# llama.cpp's vocab-test format.
import random, sys, subprocess
SEP = b"\n__ggml_vocab_test__\n"
hand = [
 "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
 "<|im_start|>user\nHi<|im_end|><|im_start|>assistant\nHello!<|im_end|><|endoftext|>",
 "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHello [/INST] Hi </s><s>[INST] Again [/INST]",
 "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
 "<|im_start|><|im_start|>", "<|im_end", "|im_end|>", "<<|im_end|>>", "<|im_start|>\n<|im_end|>",
 "def fib(n):\n    if n < 2:\n        return n\n    return fib(n-1) + fib(n-2)\n",
 "#include <stdio.h>\nint main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
 "for (int i = 0; i < 100; ++i) { x[i] = i * 3.14159f; }",
 "SELECT * FROM users WHERE id = 12345 AND name LIKE '%abc%';",
 "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
 "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
 "https://example.com/path?q=1&r=two#frag", "user@example.org", "C:\\Windows\\System32",
 "🦙🦙🦙", "🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅", "👍🏽👋🏿", "🇫🇷🇯🇵", "🫨🪿🫎",
 "中文测试：你好，世界！", "日本語のテキスト、カタカナとひらがな。", "한국어 텍스트입니다.", "ภาษาไทย", "Tiếng Việt có dấu",
 "Ελληνικά κείμενο", "Русский текст, ёлка!", "עברית וערבית العربية", "हिन्दी पाठ", "𠀀𠀁𪜀 𰀀", "\U00031350\U00031351 \U0002EBF0",
 "Kaktovik: \U0001D2C0\U0001D2C1\U0001D2C2", "Kawi: \U00011F50\U00011F51 \U00011F04\U00011F05 \U00011F43",
 "Mongolian\u180evowel", "nbsp\u00a0here", "ideographic\u3000space", "thin\u2009space", "line\u2028sep", "next\u0085line",
 "zero\u200bwidth", "\ufeffBOM", "soft\u00adhyphen", "combining e\u0301 a\u0308 n\u0303",
 "I'm sure you'll see they've said we'd done it, didn't they? IT'S HE'LL WE'RE",
 "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D", "''''", "' ' '", " ' ", "a ' b",
 "Hello ,world . Is it ? Yes !", "don 't stop 'm", 
 "1 12 123 1234 12345 123456 1234567 12345678 123456789", "3.14159265358979", "1,000,000.00", "٣٤٥ ١٢ ½ ¾ ² ³ ⅕ Ⅻ",
 "   leading", "trailing   ", "  both  ", "\t\ttabs\t", "\n\n\nnewlines\n\n", "\r\n\r\nwindows\r\n", "mixed \t \n \r\n  \n",
 " \n", "\n ", "  \n  \n  ", "a\n\n\n\n\n\n\n\nb", "x" + " " * 40 + "y", "\t" * 17,
 "", " ", "a", "\x00", "\x00\x01\x02\x7f", "▁", "▁▁test▁", "ĠĠ", "Ċ",
 "<unk>", "<s>", "</s>", "<s></s><unk>", "<0x0A>", "<|endoftext|>", "<fim_prefix>a<fim_suffix>b<fim_middle>", "<fim_pad><reponame>x<file_sep>",
]
hand_bytes = [
 b"a\xffb", b"\xff", b"\xfe\xff", b"\x80", b"\x80\x80\x80", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80",
 b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xef\xbf\xbf", b"\xf0\x80\x80\x80", b"\xf4\x8f\xbf\xbf",
 b"\xe4\xb8", b"\xe4\xb8 \xe4", b"abc\xe4", b"\xf0\x9f\xa6", b"\xf0\x9f\xa6 x", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80",
 b"caf\xe9", b"na\xefve", b"\xe2\x82\xac\xe2\x82", b"\xc3\x28", b"\xa0\xa1", b"\xe1\x80\xc0",
 b"<|im_start|>\xff<|im_end|>", b" \xff \xfe ", b"\xe2\x96\x81\xe2\x96",
]
out = bytearray()
for s in hand:
    out += s.encode() + SEP
for b in hand_bytes:
    out += b + SEP
rnd = subprocess.run(["python3", sys.argv[1], "7", "600"], capture_output=True).stdout
out += rnd
sys.stdout.buffer.write(bytes(out))
