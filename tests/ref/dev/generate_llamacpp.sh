#!/bin/bash
# DEV-ONLY stand-in for Locus's `generate --model F --prompt-ids IDS --dump-logits OUT
# [--ubatch N] [--threads N]`, backed by llama.cpp (tests/ref/dev/llamacpp_logits.c built
# at $LLAMACPP_LOGITS, default /tmp/llamacpp_logits).  --ubatch/--threads are accepted and
# ignored (llama.cpp is run the same way each time), so the ubatch/threads checks of
# t_reference.sh pass trivially with it; only the reference comparison is meaningful.
set -e
model='' ids='' out=''
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --prompt-ids) ids=$2; shift 2 ;;
    --dump-logits) out=$2; shift 2 ;;
    --ubatch|--threads) shift 2 ;;
    *) echo "generate_llamacpp.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
exec "${LLAMACPP_LOGITS:-/tmp/llamacpp_logits}" "$model" "$ids" "$out" >/dev/null
