#!/bin/bash
# t_tokenize: the gguf-tokenize tool reproduces llama.cpp's vocab-test outputs
# byte for byte (tests/data/tokenizers), decodes them back like
# llama_detokenize, and fails clearly on bad input. Env: LOCUS_SRC, LOCUS_BIN.
set -u
SRC=${LOCUS_SRC:-.}
BIN=${LOCUS_BIN:-build/bin}
T=$BIN/gguf-tokenize
D=$SRC/tests/data/tokenizers
if [ ! -x "$T" ]; then
	echo "skip: $T not built"
	exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

for v in gpt-2 llama-spm starcoder smollm2; do
	if "$T" "$D/ggml-vocab-$v.gguf" < "$D/ggml-vocab-$v.gguf.inp" > "$tmp/out" &&
		cmp -s "$tmp/out" "$D/ggml-vocab-$v.gguf.out"; then
		echo "ok   $v vocab test"
	else
		echo "FAIL $v vocab test"; fail=1
	fi
done

# extra corpus with flags: extra.<vocab>.<add><parse>.out
for f in "$D"/extra.*.out; do
	base=$(basename "$f" .out)          # extra.smollm2.11
	flags=${base##*.}                   # 11
	v=${base#extra.}; v=${v%.*}         # smollm2 or gpt-2+qwen2
	case $v in *+*) continue ;; esac    # pre variants: test_tokenizer covers them
	args=()
	[ "${flags:0:1}" = 1 ] && args+=(--add-special)
	[ "${flags:1:1}" = 1 ] && args+=(--parse-special)
	if "$T" "${args[@]}" "$D/ggml-vocab-$v.gguf" < "$D/extra.inp" > "$tmp/out" && cmp -s "$tmp/out" "$f"; then
		echo "ok   $base"
	else
		echo "FAIL $base"; fail=1
	fi
done

# decoding: extra.<vocab>.<ap>.dec<rs><us> = llama_detokenize(remove_special=rs, unparse_special=us)
for f in "$D"/extra.*.dec*; do
	name=$(basename "$f")               # extra.gpt-2.00.dec01
	ids=$D/${name%.dec*}.out
	fl=${name##*.dec}
	v=${name#extra.}; v=${v%%.*}
	args=(--decode)
	[ "${fl:0:1}" = 1 ] && args+=(--remove-special)
	[ "${fl:1:1}" = 0 ] && args+=(--hide-special)
	if "$T" "${args[@]}" "$D/ggml-vocab-$v.gguf" < "$ids" > "$tmp/out" && cmp -s "$tmp/out" "$f"; then
		echo "ok   $name"
	else
		echo "FAIL $name"; fail=1
	fi
done

# --text and --pieces
out=$("$T" --text "Hello world" "$D/ggml-vocab-gpt-2.gguf")
[ "$out" = " 15496 995" ] && echo "ok   --text" || { echo "FAIL --text: '$out'"; fail=1; }
out=$("$T" --pieces --parse-special --text "<|im_end|>" "$D/ggml-vocab-smollm2.gguf")
[ "$out" = "$(printf '2\t<|im_end|>')" ] && echo "ok   --pieces" || { echo "FAIL --pieces: '$out'"; fail=1; }

# usage and errors
"$T" --help | grep -q "usage: gguf-tokenize" && echo "ok   --help" || { echo "FAIL --help"; fail=1; }
"$T" > /dev/null 2>&1; [ $? -eq 2 ] && echo "ok   no args" || { echo "FAIL no args"; fail=1; }
"$T" --bogus x > /dev/null 2>&1; [ $? -eq 2 ] && echo "ok   bad option" || { echo "FAIL bad option"; fail=1; }
err=$("$T" "$tmp/missing.gguf" < /dev/null 2>&1); rc=$?
if [ $rc -eq 1 ] && echo "$err" | grep -q "missing.gguf"; then echo "ok   missing file"; else echo "FAIL missing file ($rc): $err"; fail=1; fi
head -c 100 "$D/ggml-vocab-gpt-2.gguf" > "$tmp/trunc.gguf"
err=$("$T" "$tmp/trunc.gguf" < /dev/null 2>&1); rc=$?
if [ $rc -eq 1 ] && [ -n "$err" ]; then echo "ok   truncated file"; else echo "FAIL truncated file ($rc)"; fail=1; fi
printf 'not a gguf file at all' > "$tmp/junk.gguf"
err=$("$T" "$tmp/junk.gguf" < /dev/null 2>&1); rc=$?
if [ $rc -eq 1 ] && [ -n "$err" ]; then echo "ok   junk file"; else echo "FAIL junk file ($rc)"; fail=1; fi

exit $fail
