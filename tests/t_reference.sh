#!/bin/bash
# t_reference: the C engine's logits against an independent numpy reference.
#
# For every weight type (F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q4_K Q6_K) and both archs
# (llama: NORM rope; qwen2: q/k/v biases + NEOX rope), plus llama3 rope scaling,
# untied outputs and a no-GQA model, this builds a small synthetic model with
# mkmodel (2 layers, dim 256, 4 heads / 2 kv heads unless stated), runs
# `generate --dump-logits` on seeded random token ids (12-40 tokens; 128 for the
# llama3-rope F32 case, whose frequency factors only touch slow dimensions), and
# checks:
#   1. engine (one prefill chunk, and --ubatch 1 = token-by-token decode path)
#      vs tests/ref/llama_ref.py (float64, exact dequantization), per position:
#      relative L2 error, max|diff| / rms, argmax; tolerances per type from the
#      table in tests/ref/compare.py (reasoning: tests/ref/README.md)
#   2. --ubatch 1 vs one chunk: "tight" (float weights) / "tight-q" (quantized)
#   3. --threads 1 vs --threads 2: bitwise identical (cmp)
# All cases run; failures are listed at the end.  Exit 0 pass, 1 fail,
# 77 skip only when $LOCUS_PY has no numpy.
#
# Environment: LOCUS_SRC (source root), LOCUS_BIN (build/bin), LOCUS_PY (python
# with numpy, default /usr/bin/python3).  For running against other tools:
# LOCUS_MKMODEL, LOCUS_GENERATE (default $LOCUS_BIN/mkmodel, $LOCUS_BIN/generate),
# LOCUS_REF_TOKENIZER (vocab GGUF), LOCUS_REF_KEEP=1 keeps the work directory.
set -u

SRC=${LOCUS_SRC:-$(pwd)}
BIN=${LOCUS_BIN:-$SRC/build/bin}
PY=${LOCUS_PY:-/usr/bin/python3}
MKMODEL=${LOCUS_MKMODEL:-$BIN/mkmodel}
GENERATE=${LOCUS_GENERATE:-$BIN/generate}
TOKENIZER=${LOCUS_REF_TOKENIZER:-$SRC/tests/data/tokenizers/ggml-vocab-llama-spm.gguf}
REF=$SRC/tests/ref

if ! "$PY" -c 'import numpy' 2>/dev/null; then
  echo "SKIP: $PY cannot import numpy (install python3-numpy)"
  exit 77
fi
for f in "$MKMODEL" "$GENERATE"; do
  [ -x "$f" ] || { echo "FAIL: $f is missing or not executable (build it first)"; exit 1; }
done
[ -r "$TOKENIZER" ] || { echo "FAIL: tokenizer $TOKENIZER is missing"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/t_reference.XXXXXX")
if [ "${LOCUS_REF_KEEP:-0}" = 1 ]; then
  echo "work directory: $WORK"
else
  trap 'rm -rf "$WORK"' EXIT
fi

# name | tolerance row | mkmodel arguments [| n_tokens]
CASES=()
seed=1
for arch in llama qwen2; do
  for t in F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q4_K Q6_K; do
    CASES+=("$arch-$t|$t|--arch $arch --type $t")
  done
done
# Feature models use float weights where a missed feature would be smaller than
# the quantized-type tolerance (llama3 factors change logits by only a few %).
CASES+=("llama-llama3rope-F32|F32|--arch llama --type F32 --rope-scaling llama3|128")
CASES+=("llama-llama3rope-Q8_0|Q8_0|--arch llama --type Q8_0 --rope-scaling llama3")
CASES+=("llama-untied-F16-outF32|F16|--arch llama --type F16 --output-type F32")
CASES+=("llama-untied-Q4_K-outQ6_K|Q4_K|--arch llama --type Q4_K --output-type Q6_K")
CASES+=("qwen2-untied-Q4_0-outQ8_0|Q4_0|--arch qwen2 --type Q4_0 --output-type Q8_0")
CASES+=("llama-mha-F32|F32|--arch llama --type F32 --kv-heads 4")

FAILED=()
fail() { echo "  FAIL $1: $2"; FAILED+=("$1: $2"); }

start=$(date +%s)
for c in "${CASES[@]}"; do
  IFS='|' read -r name tol args n_tok <<<"$c"
  seed=$((seed + 1))
  m=$WORK/$name.gguf
  echo "== $name (seed $seed)"
  case " $args " in *" --kv-heads "*) ;; *) args="$args --kv-heads 2" ;; esac  # GQA by default
  # shellcheck disable=SC2086  # $args is a word list on purpose
  if ! "$MKMODEL" -o "$m" --layers 2 --dim 256 --heads 4 --ffn 512 --ctx 512 \
      --seed "$seed" --tokenizer "$TOKENIZER" $args >"$WORK/$name.mk.log" 2>&1; then
    fail "$name" "mkmodel failed: $(tail -n 3 "$WORK/$name.mk.log" | tr '\n' ' ')"
    continue
  fi
  [ -n "$n_tok" ] || n_tok=$((12 + (seed * 7) % 29))
  ids=$("$PY" "$REF/llama_ref.py" --model "$m" --random-tokens "$n_tok" --seed "$seed") \
    || { fail "$name" "could not draw token ids"; continue; }

  if ! "$PY" "$REF/llama_ref.py" --model "$m" --tokens "$ids" --out "$WORK/$name.ref.f32" --info \
      >"$WORK/$name.ref.log" 2>&1; then
    fail "$name" "reference failed: $(tail -n 3 "$WORK/$name.ref.log" | tr '\n' ' ')"
    continue
  fi
  head -n 1 "$WORK/$name.ref.log" | sed 's/^/  ref: /'
  n_vocab=$(sed -n 's/.* vocab=\([0-9]*\) .*/\1/p' "$WORK/$name.ref.log" | head -n 1)

  ok=1
  for run in "chunk:--threads 2" "ubatch1:--ubatch 1 --threads 2" "threads1:--threads 1"; do
    tag=${run%%:*}
    # shellcheck disable=SC2086
    if ! "$GENERATE" --model "$m" --prompt-ids "$ids" --dump-logits "$WORK/$name.$tag.f32" ${run#*:} \
        >"$WORK/$name.$tag.log" 2>&1; then
      fail "$name" "generate ($tag: ${run#*:}) failed: $(tail -n 3 "$WORK/$name.$tag.log" | tr '\n' ' ')"
      ok=0
    fi
  done
  [ $ok = 1 ] || continue

  for tag in chunk ubatch1; do
    "$PY" "$REF/compare.py" --type "$tol" --n-vocab "$n_vocab" --label "$name engine ($tag) vs reference" \
      "$WORK/$name.$tag.f32" "$WORK/$name.ref.f32" | sed 's/^/  /'
    [ "${PIPESTATUS[0]}" = 0 ] || fail "$name" "engine logits ($tag) differ from the reference beyond the $tol tolerance"
  done

  case $tol in F32|F16|BF16) tight=tight ;; *) tight="tight-q" ;; esac
  "$PY" "$REF/compare.py" --type $tight --n-vocab "$n_vocab" --label "$name ubatch 1 vs chunk" \
    "$WORK/$name.ubatch1.f32" "$WORK/$name.chunk.f32" | sed 's/^/  /'
  [ "${PIPESTATUS[0]}" = 0 ] || fail "$name" "--ubatch 1 logits differ from the single-chunk logits ($tight)"

  if cmp -s "$WORK/$name.threads1.f32" "$WORK/$name.chunk.f32"; then
    echo "  ok   $name threads 1 vs 2: bitwise identical"
  else
    fail "$name" "--threads 1 and --threads 2 logits are not bitwise identical"
  fi
done

echo "== ${#CASES[@]} models in $(($(date +%s) - start))s"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED (${#FAILED[@]}):"
  printf '  %s\n' "${FAILED[@]}"
  exit 1
fi
echo "PASS"
exit 0
