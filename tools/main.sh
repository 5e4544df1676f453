#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine (as root): installs the
# dependencies, builds, fetches the default model and runs it.
# Until the serving engine lands, the main job is a generation demo on the
# CPU backend with SmolLM2-135M-Instruct.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/scripts/install-deps.sh
tools/scripts/build.sh release
tools/scripts/fetch-model.sh
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
PROMPT=${PROMPT:-"What is the capital of France? Answer in one sentence."}
echo "== generate --chat (greedy) =="
build/bin/generate --model "$MODEL" --chat --prompt "$PROMPT" -n 64 --temp 0 -v
