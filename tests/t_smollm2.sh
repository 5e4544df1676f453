#!/bin/bash
# t_smollm2: end to end on the default model (SmolLM2-135M-Instruct, Q4_1),
# fetched by tools/scripts/fetch-model.sh into models/.
#  - greedy --chat answers "What is the capital of France?" with Paris
#    (with a system message; see the note below), and so does the
#    one-sentence variant under the template's own default system message;
#  - greedy output is identical across runs, thread counts and prompt
#    chunk sizes (ubatch), as token ids.
# Note: with the template's default system message ("You are a helpful AI
# assistant named SmolLM...") and the bare question, this Q4_1 model's
# greedy answer is not about Paris; llama.cpp gives the same token ids.
set -u
SRC=${LOCUS_SRC:-.}
BIN=${LOCUS_BIN:-build/bin}
M=${LOCUS_MODEL:-$SRC/models/SmolLM2-135M-Instruct.Q4_1.gguf}
G=$BIN/generate
if [ ! -f "$M" ]; then
	echo "skip: $M is missing (tools/scripts/fetch-model.sh fetches it)"
	exit 77
fi
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

check_paris() { # label, args...
	local label=$1
	shift
	if "$G" --model "$M" --chat --temp 0 -n 24 "$@" > "$tmp/out" 2> "$tmp/err" && grep -q Paris "$tmp/out"; then
		echo "ok   $label: $(head -c 200 "$tmp/out" | tr '\n' ' ')"
	else
		echo "FAIL $label: $(cat "$tmp/out" "$tmp/err" | head -c 400)"
		fail=1
	fi
}
check_paris "chat, system message" --system "You are a helpful assistant." --prompt "What is the capital of France?"
check_paris "chat, default system message" --prompt "What is the capital of France? Answer in one sentence."

# Determinism: ids from repeated runs, 1 and 2 threads, and odd chunk sizes.
P="Write a short story about a robot who learns to paint. Once upon a time,"
run_ids() { "$G" --model "$M" --prompt "$P" -n 48 --temp 0 --ids --ignore-eos "$@" 2>/dev/null; }
ref=$(run_ids --threads 2)
if [ -z "$ref" ]; then
	echo "FAIL generate produced no ids"
	exit 1
fi
for args in "--threads 2" "--threads 1" "--threads 2 --ubatch 5" "--threads 1 --ubatch 1"; do
	got=$(run_ids $args)
	if [ "$got" = "$ref" ]; then
		echo "ok   greedy ids identical with $args"
	else
		echo "FAIL greedy ids differ with $args"
		echo "  ref: $ref"
		echo "  got: $got"
		fail=1
	fi
done

# Seeded sampling is reproducible too.
s1=$("$G" --model "$M" --prompt "$P" -n 32 --temp 0.9 --seed 1234 --ids 2>/dev/null)
s2=$("$G" --model "$M" --prompt "$P" -n 32 --temp 0.9 --seed 1234 --ids --threads 1 2>/dev/null)
if [ -n "$s1" ] && [ "$s1" = "$s2" ]; then
	echo "ok   seeded sampling reproducible"
else
	echo "FAIL seeded sampling differs: '$s1' vs '$s2'"
	fail=1
fi
exit $fail
