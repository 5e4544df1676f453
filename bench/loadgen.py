#!/usr/bin/env python3
"""loadgen: a small closed-loop load generator for OpenAI-compatible servers,
used by bench/serve-vs-llamacpp.sh until uring-bench exists.

  loadgen.py --url http://127.0.0.1:8080 -n 40 -c 4 --max-tokens 64 [--chat] [--stream]

Each of c threads sends requests back to back (keep-alive) until n are done.
Prints one JSON line: requests, errors, wall seconds, req/s, output tokens/s,
latency avg/p50/p90/p95/p99/max (ms) and, with --stream, TTFT percentiles.
Prompts cycle through a fixed list, the same for every server; temperature 0
and ignore_eos (vLLM/llama.cpp extension) make every request generate exactly
max_tokens, so servers do the same work.
The client's own overhead is small next to requests that take tens of
milliseconds or more; it is not meant for microsecond-level measurements.
"""
import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a bicycle works to a ten-year-old.",
    "List five facts about the ocean.",
    "Describe a sunrise over the mountains.",
    "What are the benefits of reading books every day?",
    "Give three tips for learning a new language.",
    "Summarize the plot of a detective novel you invent.",
    "Why is the sky blue? Answer in a paragraph.",
]


def pct(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("-c", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--chat", action="store_true")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--model", default=None, help="model name to send (default: none)")
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    lock = threading.Lock()
    state = {"next": 0}
    lat, ttft, toks, errors = [], [], [], []

    def worker():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        while True:
            with lock:
                i = state["next"]
                if i >= a.n:
                    break
                state["next"] += 1
            prompt = PROMPTS[i % len(PROMPTS)]
            body = {"max_tokens": a.max_tokens, "temperature": 0, "ignore_eos": True, "stream": a.stream}
            if a.model:
                body["model"] = a.model
            if a.stream:
                body["stream_options"] = {"include_usage": True}
            if a.chat:
                body["messages"] = [{"role": "user", "content": prompt}]
                path = "/v1/chat/completions"
            else:
                body["prompt"] = prompt
                path = "/v1/completions"
            t0 = time.perf_counter()
            first = None
            n_out = 0
            try:
                try:
                    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
                    r = conn.getresponse()
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    # The server closed the kept-alive connection before this
                    # request: nothing was processed, reconnect and send again.
                    conn.close()
                    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
                    t0 = time.perf_counter()
                    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
                    r = conn.getresponse()
                if r.status != 200:
                    r.read()
                    with lock:
                        errors.append(r.status)
                    continue
                if a.stream:
                    buf = b""
                    while True:
                        chunk = r.read1(65536)
                        if not chunk:
                            break
                        if first is None:
                            first = time.perf_counter()
                        buf += chunk
                        while b"\n\n" in buf:
                            ev, buf = buf.split(b"\n\n", 1)
                            if ev.startswith(b"data: ") and ev[6:] != b"[DONE]":
                                js = json.loads(ev[6:])
                                if js.get("usage"):
                                    n_out = js["usage"]["completion_tokens"]
                else:
                    js = json.loads(r.read())
                    n_out = js["usage"]["completion_tokens"]
            except (OSError, ValueError, http.client.HTTPException) as e:
                with lock:
                    errors.append(type(e).__name__)
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
                continue
            t1 = time.perf_counter()
            with lock:
                lat.append((t1 - t0) * 1e3)
                toks.append(n_out)
                if first is not None:
                    ttft.append((first - t0) * 1e3)
        conn.close()

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(a.c)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    wall = time.perf_counter() - t0
    out = {
        "requests": len(lat), "errors": len(errors), "wall_s": round(wall, 3),
        "req_s": round(len(lat) / wall, 3), "out_tok_s": round(sum(toks) / wall, 2),
        "out_tokens": sum(toks),
        "lat_avg_ms": round(statistics.mean(lat), 2) if lat else 0,
        "lat_p50_ms": round(pct(lat, 50), 2), "lat_p90_ms": round(pct(lat, 90), 2),
        "lat_p95_ms": round(pct(lat, 95), 2), "lat_p99_ms": round(pct(lat, 99), 2),
        "lat_max_ms": round(max(lat), 2) if lat else 0,
    }
    if errors:
        out["error_kinds"] = sorted(set(map(str, errors)))
    if ttft:
        out.update({"ttft_p50_ms": round(pct(ttft, 50), 2), "ttft_p95_ms": round(pct(ttft, 95), 2)})
    print(json.dumps(out))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
