#!/usr/bin/env python3
"""t_engine: the serving engine end to end, on loopback, with real clients.

Starts build/bin/engine (SmolLM2 on the CPU backend, and a null-backend
instance for auth and overload), then talks to it with http.client, raw
sockets and the official `openai` package:
  - /health, /v1/models, /tokenize, /detokenize, /metrics;
  - completions and chat completions, streamed and not, logprobs, usage;
  - greedy output: streamed == whole, concurrent == one at a time,
    preempted (tiny KV pool) == unpreempted;
  - errors: invalid JSON and parameters (field named), unknown model/path,
    wrong method, oversized body, prompt over the context, malformed and
    smuggling HTTP, each followed by a good request on the same server;
  - client disconnect mid-stream, during a whole response, while queued and
    mid-prefill: the request stops within a step and frees its KV blocks;
  - overload: 429 with Retry-After when the waiting queue is full;
  - API key; SIGTERM drains in-flight requests and exits 0.
Every wait is bounded; every process started is stopped.
Env: LOCUS_SRC (source root), LOCUS_BIN (build/bin).
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SRC = os.environ.get("LOCUS_SRC", ".")
BIN = os.environ.get("LOCUS_BIN", "build/bin")
MODEL = os.environ.get("LOCUS_MODEL", os.path.join(SRC, "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
FAILS = []
ENGINES = []  # every engine started, so a failure can show each one's log


def check(cond, label, detail=""):
    if cond:
        print("ok   " + label)
    else:
        print("FAIL " + label + (": " + str(detail)[:600] if detail else ""))
        FAILS.append(label)
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Engine:
    def __init__(self, name, conf, env=None):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="locus-t-engine-")
        self.conf = os.path.join(self.dir, name + ".conf")
        with open(self.conf, "w") as f:
            f.write(conf.replace("@PORT@", str(self.port)).replace("@MODEL@", MODEL))
        self.name = name
        self.log = open(os.path.join(self.dir, name + ".log"), "w+")
        ENGINES.append(self)
        self.proc = subprocess.Popen([os.path.join(BIN, "engine"), "--config", self.conf],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})))
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                st, _, _ = request(self.port, "GET", "/health", timeout=2)
                if st == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("engine %s did not become healthy:\n%s" % (name, self.logtext()))

    def logtext(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-8000:]

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode


def request(port, method, path, body=None, headers=None, timeout=120):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    c.close()
    return out


def post(port, path, body, **kw):
    st, hd, data = request(port, "POST", path, body, **kw)
    try:
        js = json.loads(data)
    except ValueError:
        js = None
    return st, hd, js


def sse_events(port, path, body, timeout=120):
    """Posts a streaming request; returns (status, list of event payloads)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        return r.status, [r.read()]
    events, buf = [], b""
    while True:
        chunk = r.read1(65536) if hasattr(r, "read1") else r.read(1)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            for line in ev.split(b"\n"):
                if line.startswith(b"data: "):
                    events.append(line[6:].decode())
    c.close()
    return 200, events


def raw(port, data, timeout=5.0):
    """Sends raw bytes, returns everything read until close or timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except socket.timeout:
        pass
    s.close()
    return out


def status_of(resp):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", resp)
    return int(m.group(1)) if m else None


def metric(port, name, label=None):
    """The series `name` summed over its lines (only those containing
    `label`, e.g. 'finished_reason="abort"', when given); None if absent."""
    _, _, body = request(port, "GET", "/metrics")
    total, found = 0.0, False
    for line in body.decode().splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and (label is None or label in line):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def aborted_total(port):
    return metric(port, "locus:request_success_total", 'finished_reason="abort"')


CPU_CONF = """
[server]
listen = 127.0.0.1:@PORT@
net_threads = 1
[model]
path = @MODEL@
[backend]
type = cpu
threads = 2
[numa]
pin = off
[batching]
max_seqs = 8
step_tokens = 256
prefill_chunk = 128
[kv]
tokens = %d
[limits]
max_body = 64KiB
header_timeout = 2s
request_timeout = 120s
max_waiting = 32
drain_timeout = 20s
"""

NULL_CONF = """
[server]
listen = 127.0.0.1:@PORT@
net_threads = 1
api_key = %s
[model]
path = @MODEL@
[backend]
type = null
null_delay_us = %d
[numa]
pin = off
[batching]
max_seqs = 2
step_tokens = 64
prefill_chunk = 64
[kv]
tokens = 4096
[limits]
max_waiting = 2
drain_timeout = 5s
"""

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"


def chat_body(q, **kw):
    b = {"model": "SmolLM2-135M-Instruct.Q4_1", "temperature": 0, "max_tokens": 24,
         "messages": [{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": q}]}
    b.update(kw)
    return b


def test_basic(e):
    p = e.port
    st, _, js = request(p, "GET", "/v1/models")
    models = json.loads(js)
    check(st == 200 and models["data"][0]["id"] == "SmolLM2-135M-Instruct.Q4_1", "models lists the served name",
          models)
    st, _, js = post(p, CHAT, chat_body("What is the capital of France?"))
    check(st == 200 and "Paris" in js["choices"][0]["message"]["content"], "chat greedy answer contains Paris", js)
    check(js and js["object"] == "chat.completion" and js["usage"]["completion_tokens"] > 0 and
          js["usage"]["total_tokens"] == js["usage"]["prompt_tokens"] + js["usage"]["completion_tokens"],
          "chat response shape and usage", js)
    st, _, js = post(p, COMP, {"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0})
    check(st == 200 and js["object"] == "text_completion" and len(js["choices"][0]["text"]) > 0 and
          js["usage"]["completion_tokens"] <= 8 and js["choices"][0]["finish_reason"] in ("stop", "length"),
          "completion greedy", js)
    st, _, tk = post(p, "/tokenize", {"prompt": "Hello world, this is Locus."})
    st2, _, dt = post(p, "/detokenize", {"tokens": tk["tokens"] if tk else []})
    check(st == 200 and st2 == 200 and tk["count"] == len(tk["tokens"]) and
          dt["prompt"] == "Hello world, this is Locus.", "tokenize/detokenize round trip", (tk, dt))
    # token-id prompts give the same answer as the text
    st, _, a = post(p, COMP, {"prompt": tk["tokens"], "max_tokens": 6, "temperature": 0})
    st2, _, b2 = post(p, COMP, {"prompt": "Hello world, this is Locus.", "max_tokens": 6, "temperature": 0})
    check(st == 200 and st2 == 200 and a["choices"][0]["text"] == b2["choices"][0]["text"],
          "token-id prompt equals text prompt", (a, b2))
    # logprobs
    st, _, js = post(p, COMP, {"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0, "logprobs": 3})
    lp = js and js["choices"][0]["logprobs"]
    check(st == 200 and lp and len(lp["tokens"]) == js["usage"]["completion_tokens"] and
          all(len(t) == 3 for t in lp["top_logprobs"]) and all(x <= 0 for x in lp["token_logprobs"]),
          "completion logprobs", js)
    st, _, js = post(p, CHAT, chat_body("Say hi.", logprobs=True, top_logprobs=2, max_tokens=4))
    lc = js and js["choices"][0]["logprobs"]
    check(st == 200 and lc and len(lc["content"]) > 0 and all(len(t["top_logprobs"]) == 2 for t in lc["content"]),
          "chat logprobs", js)


def test_streaming(e):
    p = e.port
    body = chat_body("Name three colors.", max_tokens=32)
    st, _, whole = post(p, CHAT, body)
    sst, events = sse_events(p, CHAT, dict(body, stream=True, stream_options={"include_usage": True}))
    ok = sst == 200 and events and events[-1] == "[DONE]"
    chunks = [json.loads(x) for x in events[:-1]] if ok else []
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    usage = [c["usage"] for c in chunks if c.get("usage")]
    check(ok and chunks[0]["choices"][0]["delta"].get("role") == "assistant", "stream starts with the role", events[:2])
    check(ok and text == whole["choices"][0]["message"]["content"], "streamed text equals the whole response",
          (text, whole))
    check(ok and usage and usage[-1]["completion_tokens"] == whole["usage"]["completion_tokens"],
          "stream usage (include_usage)", usage)
    fins = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices") and c["choices"][0].get("finish_reason")]
    check(fins == [whole["choices"][0]["finish_reason"]], "one finish_reason, same as the whole response", fins)
    st, events = sse_events(p, COMP, {"prompt": "Count: one, two,", "max_tokens": 10, "temperature": 0, "stream": True})
    check(st == 200 and events[-1] == "[DONE]" and
          all(json.loads(x)["object"] == "text_completion" for x in events[:-1]), "completion stream", events[:3])


def test_concurrency(e):
    p = e.port
    qs = ["What is 2+2?", "Name a fruit.", "What color is the sky?", "Say hello in French.",
          "What is the capital of Italy?", "Write one word."]
    seq = []
    for q in qs:
        st, _, js = post(p, CHAT, chat_body(q, max_tokens=20))
        seq.append(js["choices"][0]["message"]["content"] if st == 200 else None)
    par = [None] * len(qs)

    def run(i):
        st, _, js = post(p, CHAT, chat_body(qs[i], max_tokens=20))
        par[i] = js["choices"][0]["message"]["content"] if st == 200 else None

    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(qs))]
    [t.start() for t in ts]
    [t.join(120) for t in ts]
    check(all(seq) and seq == par, "6 concurrent greedy requests equal the same run one at a time",
          list(zip(seq, par)))
    streamed = [None] * len(qs)

    def run_stream(i):
        st, events = sse_events(p, CHAT, chat_body(qs[i], max_tokens=20, stream=True))
        if st == 200 and events and events[-1] == "[DONE]":
            chunks = [json.loads(x) for x in events[:-1]]
            streamed[i] = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))

    ts = [threading.Thread(target=run_stream, args=(i,)) for i in range(len(qs))]
    [t.start() for t in ts]
    [t.join(120) for t in ts]
    check(streamed == seq, "6 concurrent streams equal the same requests run one at a time", list(zip(seq, streamed)))
    return dict(zip(qs, seq))


def test_curl(e):
    """The same API from curl, the client most people try first."""
    base = "http://127.0.0.1:%d" % e.port
    out = subprocess.run(["curl", "-sS", "-N", base + CHAT, "-H", "Content-Type: application/json", "-d",
                          json.dumps(chat_body("What is the capital of France?", stream=True))],
                         capture_output=True, timeout=60)
    text = out.stdout.decode()
    content = "".join(json.loads(l[6:])["choices"][0]["delta"].get("content") or ""
                      for l in text.splitlines() if l.startswith("data: {") and '"choices":[{' in l)
    check(out.returncode == 0 and text.rstrip().endswith("data: [DONE]") and "Paris" in content,
          "curl: streamed chat", text[-300:])
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", base + "/health"],
                         capture_output=True, timeout=10)
    check(out.stdout == b"200", "curl: /health", out.stdout)


def test_openai(e):
    try:
        import openai
    except ImportError:
        check(False, "the openai package is installed (tools/scripts/py-env.sh)")
        return
    cl = openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % e.port, api_key="unused", max_retries=0, timeout=60)
    r = cl.chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1", temperature=0, max_tokens=16,
                                   messages=[{"role": "system", "content": "You are a helpful assistant."},
                                             {"role": "user", "content": "What is the capital of France?"}])
    check("Paris" in r.choices[0].message.content and r.usage.completion_tokens > 0, "openai: chat", r)
    parts = []
    for ch in cl.chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1", temperature=0, max_tokens=16,
                                         stream=True, messages=[{"role": "user", "content": "Say hello."}]):
        if ch.choices and ch.choices[0].delta.content:
            parts.append(ch.choices[0].delta.content)
    check(len("".join(parts)) > 0, "openai: chat stream", parts)
    r = cl.completions.create(model="SmolLM2-135M-Instruct.Q4_1", prompt="1, 2, 3,", max_tokens=6, temperature=0)
    check(r.choices[0].text and r.usage.prompt_tokens > 0, "openai: completions", r)
    try:
        cl.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
        check(False, "openai: unknown model raises NotFoundError")
    except openai.NotFoundError:
        check(True, "openai: unknown model raises NotFoundError")


def test_errors(e):
    p = e.port
    cases = [
        ("invalid JSON", CHAT, b'{"messages": [', 400, None),
        ("temperature as a string", CHAT, chat_body("x", temperature="hot"), 400, "temperature"),
        ("negative max_tokens", COMP, {"prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
        ("n = 2", COMP, {"prompt": "x", "n": 2}, 400, "n"),
        ("empty prompt", COMP, {"prompt": ""}, 400, "prompt"),
        ("messages not an array", CHAT, {"messages": "hi"}, 400, "messages"),
        ("token id out of vocabulary", COMP, {"prompt": [1, 2, 999999]}, 400, "prompt[2]"),
        ("huge max_tokens", COMP, {"prompt": "x", "max_tokens": 10 ** 9}, 400, "max_tokens"),
        ("unknown model", COMP, {"model": "gpt-9", "prompt": "x"}, 404, "model"),
    ]
    for label, path, body, want, param in cases:
        st, _, js = post(p, path, body)
        err = js.get("error", {}) if isinstance(js, dict) else {}
        check(st == want and err.get("message") and (param is None or err.get("param") == param),
              "error: %s -> %d %s" % (label, want, param or ""), (st, js))
    st, _, js = post(p, COMP, {"prompt": "word " * 9000, "max_tokens": 4})
    check(st == 400 and js["error"].get("code") == "context_length_exceeded", "error: prompt over the context",
          (st, js))
    st, _, _ = request(p, "GET", "/v1/nothing")
    check(st == 404, "error: unknown path 404", st)
    st, hd, _ = request(p, "GET", COMP)
    check(st == 405 and "allow" in hd, "error: GET on a POST endpoint 405 with Allow", (st, hd))
    st, _, _ = request(p, "POST", COMP, b'{"prompt":"' + b"a" * 70000 + b'"}')
    check(st == 413, "error: body over [limits] max_body 413", st)
    hostile = [
        ("garbage request line", b"GARBAGE\r\n\r\n", 400),
        ("header block over 8 KiB", b"GET /health HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
        ("Content-Length and Transfer-Encoding", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 4\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("differing Content-Lengths", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", 400),
        ("obs-fold", b"GET /health HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400),
        ("NUL in a header", b"GET /health HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
        ("HTTP/2.0", b"GET /health HTTP/2.0\r\n\r\n", 505),
    ]
    for label, data, want in hostile:
        t0 = time.time()
        resp = raw(p, data)
        got = status_of(resp)
        # on failure: what came back, and after how long (a timeout is 5 s)
        check(got == want, "malformed HTTP: %s -> %d" % (label, want),
              (got, resp[:160], "%.2f s" % (time.time() - t0)))
    st, _, js = post(p, COMP, {"prompt": "Still serving?", "max_tokens": 2, "temperature": 0})
    check(st == 200, "a good request after the hostile ones", st)
    # A connection closed while lingering (413, body still arriving), then a
    # new one at once, 300 times: the new one must get its own 400. The
    # lingering close's shutdown once ran after the close and hit the next
    # connection in the same io_uring file slot (a FIN before any byte;
    # about 1 round in 150 under TSan).
    empty = 0
    for _ in range(300):
        request(p, "POST", COMP, b'{"prompt":"' + b"a" * 70000 + b'"}')
        empty += status_of(raw(p, b"GARBAGE\r\n\r\n")) != 400
    check(empty == 0, "a connection right after a lingering close gets its 400 (300 rounds, %d without)" % empty,
          empty)


def send_completion(port, body):
    """Opens a connection and sends a completion request without reading."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
              % len(data) + data)
    return s


def wait_for(cond, limit):
    t0 = time.time()
    while time.time() - t0 < limit:
        if cond():
            return True
        time.sleep(0.01)
    return cond()



def read_events(s, n):
    """Reads from socket s until n SSE events have arrived (or EOF)."""
    got = b""
    while got.count(b"data: ") < n:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk


def test_disconnect(e):
    p = e.port
    ab0 = aborted_total(p)
    s = send_completion(p, {"prompt": "Tell me a long story.", "max_tokens": 3000, "temperature": 0.8,
                            "ignore_eos": True, "stream": True})
    read_events(s, 3)
    running = metric(p, "locus:num_requests_running")
    s.close()
    t0 = time.time()
    while time.time() - t0 < 10:
        if metric(p, "locus:num_requests_running") == 0 and metric(p, "locus:kv_cache_usage_perc") == 0:
            break
        time.sleep(0.05)
    gen1 = metric(p, "locus:generation_tokens_total")
    time.sleep(0.5)
    gen2 = metric(p, "locus:generation_tokens_total")
    check(running == 1 and metric(p, "locus:num_requests_running") == 0 and
          metric(p, "locus:kv_cache_usage_perc") == 0 and gen1 == gen2,
          "disconnect mid-stream: stopped in %.2f s, KV blocks freed, no more tokens" % (time.time() - t0),
          (running, gen1, gen2))
    # The same for a whole (non-streamed) response: nothing is written before
    # the end, so only the FIN tells the client is gone.
    s = send_completion(p, {"prompt": "Tell me a long story.", "max_tokens": 3000, "temperature": 0.8,
                            "ignore_eos": True})
    t0 = time.time()
    while time.time() - t0 < 5 and metric(p, "locus:num_requests_running") != 1:
        time.sleep(0.02)
    running = metric(p, "locus:num_requests_running")
    s.close()
    t0 = time.time()
    while time.time() - t0 < 10:
        if metric(p, "locus:num_requests_running") == 0 and metric(p, "locus:kv_cache_usage_perc") == 0:
            break
        time.sleep(0.05)
    check(running == 1 and metric(p, "locus:num_requests_running") == 0 and
          metric(p, "locus:kv_cache_usage_perc") == 0,
          "disconnect while a whole response is generated: stopped in %.2f s, KV freed" % (time.time() - t0), running)
    check(aborted_total(p) == ab0 + 2, "both disconnected requests are counted as aborted", (ab0, aborted_total(p)))


def test_disconnect_queued_prefill():
    """Disconnects while queued and mid-prefill, on an engine with one seat
    and 32-token prefill chunks so both states last long enough to hit."""
    e = Engine("oneseat", CPU_CONF.replace("max_seqs = 8", "max_seqs = 1")
               .replace("step_tokens = 256", "step_tokens = 32")
               .replace("prefill_chunk = 128", "prefill_chunk = 32") % 16384)
    try:
        p = e.port
        aborted = lambda: aborted_total(p)
        # A holds the only seat, streaming; B queues behind it.
        a = send_completion(p, {"prompt": "Tell me a long story.", "max_tokens": 3000, "ignore_eos": True,
                                "temperature": 0.8, "stream": True})
        read_events(a, 2)
        ab0, pt0 = aborted(), metric(p, "locus:prompt_tokens_total")
        b = send_completion(p, {"prompt": "Queued and then gone.", "max_tokens": 8})
        queued = wait_for(lambda: metric(p, "locus:num_requests_waiting") == 1, 10)
        b.close()
        t0 = time.time()
        gone = wait_for(lambda: metric(p, "locus:num_requests_waiting") == 0, 10)
        dt = time.time() - t0
        gen0 = metric(p, "locus:generation_tokens_total")
        more = wait_for(lambda: metric(p, "locus:generation_tokens_total") > gen0 + 2, 10)
        check(queued and gone and aborted() == ab0 + 1 and metric(p, "locus:prompt_tokens_total") == pt0 and
              metric(p, "locus:num_requests_running") == 1 and more,
              "disconnect while queued: out of the queue in %.3f s, counted as abort, never admitted; "
              "the running stream goes on" % dt,
              (queued, gone, aborted(), ab0, metric(p, "locus:prompt_tokens_total"), pt0, more))
        a.close()
        check(wait_for(lambda: metric(p, "locus:num_requests_running") == 0 and
                       metric(p, "locus:kv_cache_usage_perc") == 0, 10), "the stream's seat and KV are freed")

        # C: a long prompt prefilled 32 tokens a step; the client leaves
        # after a few chunks. Generation must never start, and the engine
        # may finish at most the step in flight plus one.
        prompt = "The old lighthouse keeper wrote in his log every night. " * 150
        n_prompt = len(json.loads(request(p, "POST", "/tokenize", {"prompt": prompt})[2])["tokens"])
        gen0, st0 = metric(p, "locus:generation_tokens_total"), metric(p, "locus:engine_step_tokens_total")
        ab0 = aborted()
        c = send_completion(p, {"prompt": prompt, "max_tokens": 4})
        started = wait_for(lambda: metric(p, "locus:engine_step_tokens_total") >= st0 + 4 * 32, 30)
        c.close()
        steps_at_close = metric(p, "locus:engine_steps_total")
        t0 = time.time()
        freed = wait_for(lambda: metric(p, "locus:num_requests_running") == 0 and
                         metric(p, "locus:kv_cache_usage_perc") == 0, 10)
        dt = time.time() - t0
        fed = metric(p, "locus:engine_step_tokens_total") - st0
        after = metric(p, "locus:engine_steps_total") - steps_at_close
        check(started and freed and fed < n_prompt and after <= 2 and
              metric(p, "locus:generation_tokens_total") == gen0 and aborted() == ab0 + 1,
              "disconnect mid-prefill: stopped after %d of %d prompt tokens, %d step(s) after the close, "
              "KV freed in %.3f s, no token generated" % (fed, n_prompt, after, dt),
              (started, freed, fed, n_prompt, after, metric(p, "locus:generation_tokens_total"), gen0))
        st, _, js = post(p, COMP, {"prompt": "Still here?", "max_tokens": 3, "temperature": 0})
        check(st == 200 and js["usage"]["completion_tokens"] == 3, "a good request after the disconnects", (st, js))
    finally:
        e.stop()


def test_preemption(answers):
    # 8 blocks of 16 tokens: each request needs 2-3 blocks (about 27 prompt
    # tokens + 20 generated), 6 at once need up to 18.
    e = Engine("tinykv", CPU_CONF % 128)
    try:
        qs = list(answers)
        out = [None] * len(qs)

        def run(i):
            st, _, js = post(e.port, CHAT, chat_body(qs[i], max_tokens=20))
            out[i] = js["choices"][0]["message"]["content"] if st == 200 else (st, js)

        ts = [threading.Thread(target=run, args=(i,)) for i in range(len(qs))]
        [t.start() for t in ts]
        [t.join(120) for t in ts]
        pre = metric(e.port, "locus:num_preemptions_total")
        check(pre and pre > 0, "tiny KV pool preempts (%s preemptions)" % pre, pre)
        check(out == [answers[q] for q in qs], "preempted requests give the same greedy answers", out)
    finally:
        check(e.stop() == 0, "tinykv engine exits 0 on SIGTERM")


def test_sample_from_top(e):
    """The CUDA backend hands out each row's 64 best logits and two
    log-sum-exps instead of the row, and the host samples from those
    (sampler_sample_top), fetching the row only when the truncation or the
    draw reaches past them (sampler_top_covers). LOCUS_SAMPLE_FROM_TOP=1
    takes that path on the CPU backend, whose rows are computed anyway:
    seeded samples must be the same tokens as from whole rows,
    log-probabilities equal within 1e-4."""
    t = Engine("fromtop", CPU_CONF % 16384, env={"LOCUS_SAMPLE_FROM_TOP": "1"})
    try:
        cases = [
            dict(temperature=0.9, top_k=40, top_p=0.95, seed=7, logprobs=3),      # candidates path
            dict(temperature=1.3, top_k=64, min_p=0.02, seed=11, logprobs=1),     # all 64 candidates
            dict(temperature=0.7, top_k=5, seed=3),                               # no logprobs
            dict(temperature=0, logprobs=5),                                      # greedy with logprobs
            dict(temperature=0.8, top_k=20, seed=9, frequency_penalty=0.5),      # penalties: whole rows
            # top_k off: candidates, or the row when the nucleus, the min_p set or the draw reach past them
            dict(temperature=0.8, top_k=0, top_p=0.9, seed=5),
            dict(temperature=1.0, seed=13, logprobs=2),                           # OpenAI's defaults
            dict(temperature=0.6, min_p=0.1, seed=17),
            dict(temperature=1.5, top_p=0.98, seed=19),
        ]
        for c in cases:
            body = dict({"prompt": "Once upon a time", "max_tokens": 24, "ignore_eos": True}, **c)
            st1, _, a = post(e.port, COMP, body)
            st2, _, b = post(t.port, COMP, body)
            ok = st1 == 200 and st2 == 200
            if ok:
                ca, cb = a["choices"][0], b["choices"][0]
                ok = ca["text"] == cb["text"]
                la, lb = ca.get("logprobs"), cb.get("logprobs")
                if ok and "logprobs" in c:
                    ok = la["tokens"] == lb["tokens"] and all(
                        abs(x - y) <= 1e-4 for x, y in zip(la["token_logprobs"], lb["token_logprobs"])) and \
                        [sorted(d) for d in la["top_logprobs"]] == [sorted(d) for d in lb["top_logprobs"]]
            check(ok, "sampling from the top-64 candidates = from whole rows: %s" % c,
                  (st1, st2, a and a["choices"][0]["text"][:80], b and b["choices"][0]["text"][:80]))
        # 4 cases by candidates, 1 by whole rows (penalties), 4 by candidates
        # or, when they cannot decide, whole rows (top_miss): 24 rows each
        top = metric(t.port, "locus:logit_rows_total", 'path="top"')
        rows = metric(t.port, "locus:logit_rows_total", 'path="rows"')
        miss = metric(t.port, "locus:logit_rows_total", 'path="top_miss"')
        check(top is not None and miss is not None and top + miss == 8 * 24 and rows == 24 and top > 4 * 24 and miss > 0,
              "from-top engine: %s rows sampled from candidates, %s from whole rows, %s from whole rows after the "
              "candidates (expected 192 from candidates or after them, more than 96 from them alone, 24 whole)"
              % (top, rows, miss), (top, rows, miss))
        top0, rows0 = top, rows
        top = metric(e.port, "locus:logit_rows_total", 'path="top"')
        check(top == 0, "without the switch the CPU backend samples whole rows (%s from candidates)" % top, top)
        # Mixed steps: rows the candidates serve, rows that need the whole row
        # before the step (penalties) and rows that may need it after (top_k
        # off) in one batch; each answer as when run alone.
        kinds = [dict(temperature=0.8, top_k=20, frequency_penalty=0.5), dict(temperature=0.9, top_k=30, logprobs=2),
                 dict(temperature=1.0, logprobs=1)]
        mixed = [dict(kinds[i % 3], seed=21 + i) for i in range(6)]
        bodies = [dict({"prompt": "The river", "max_tokens": 32, "ignore_eos": True}, **c) for c in mixed]
        alone = [post(e.port, COMP, b)[2] for b in bodies]
        got = [None] * len(bodies)

        def run(i):
            got[i] = post(t.port, COMP, bodies[i])[2]

        ts = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
        [x.start() for x in ts]
        [x.join(120) for x in ts]
        same = all(a and g and a["choices"][0]["text"] == g["choices"][0]["text"] for a, g in zip(alone, got))
        top2 = metric(t.port, "locus:logit_rows_total", 'path="top"')
        rows2 = metric(t.port, "locus:logit_rows_total", 'path="rows"')
        miss2 = metric(t.port, "locus:logit_rows_total", 'path="top_miss"')
        check(same and top2 - top0 >= 64 and top2 - top0 + miss2 - miss == 128 and rows2 == rows0 + 64,
              "concurrent mix of candidate and whole-row sampling = each alone (+%s rows from candidates, +%s after "
              "them, +%s whole; expected 64..128, 128 together, 64)" % (top2 - top0, miss2 - miss, rows2 - rows0),
              [(a and a["choices"][0]["text"][:40], g and g["choices"][0]["text"][:40]) for a, g in zip(alone, got)])
    finally:
        check(t.stop() == 0, "from-top engine exits 0 on SIGTERM")


def test_null_engine():
    e = Engine("null", NULL_CONF % ("sekrit", 20000))
    try:
        p = e.port
        st, _, _ = request(p, "GET", "/health")
        check(st == 200, "API key: /health needs none", st)
        st, hd, js = post(p, COMP, {"prompt": "x", "max_tokens": 2})
        check(st == 401 and js["error"]["type"] == "authentication_error", "API key: missing -> 401", (st, js))
        st, _, js = post(p, COMP, {"prompt": "x", "max_tokens": 2}, headers={"Authorization": "Bearer wrong"})
        check(st == 401, "API key: wrong -> 401", st)
        auth = {"Authorization": "Bearer sekrit"}
        st, _, js = post(p, COMP, {"prompt": "x", "max_tokens": 3}, headers=auth)
        check(st == 200 and js["usage"]["completion_tokens"] == 3, "API key: right -> 200, null backend runs to max_tokens",
              (st, js))
        # Overload: 2 running + 2 waiting allowed; 12 at once.
        res = []
        lock = threading.Lock()

        def run():
            st, hd, js = post(p, COMP, {"prompt": "x", "max_tokens": 20}, headers=auth)
            with lock:
                res.append((st, hd.get("retry-after")))

        ts = [threading.Thread(target=run) for _ in range(12)]
        [t.start() for t in ts]
        [t.join(60) for t in ts]
        n429 = sum(1 for st, ra in res if st == 429 and ra)
        n200 = sum(1 for st, _ in res if st == 200)
        check(n429 > 0 and n200 >= 2 and n429 + n200 == 12, "overload: %d x 200, %d x 429 with Retry-After" % (n200, n429),
              res)
        st, _, _ = post(p, COMP, {"prompt": "x", "max_tokens": 2}, headers=auth)
        check(st == 200, "recovers after the overload", st)
    finally:
        check(e.stop() == 0, "null engine exits 0 on SIGTERM")


def test_sigterm(e):
    res = {}

    def run():
        res["r"] = post(e.port, COMP, {"prompt": "Write a poem.", "max_tokens": 48, "temperature": 0,
                                        "ignore_eos": True})

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)
    e.proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    try:
        st, _, _ = post(e.port, COMP, {"prompt": "x", "max_tokens": 2})
        refused = st == 503
    except OSError:
        refused = True
    t.join(60)
    rc = e.stop()
    st, _, js = res.get("r", (None, None, None))
    check(st == 200 and js["usage"]["completion_tokens"] == 48, "SIGTERM: the in-flight request completes", (st, js))
    check(refused, "SIGTERM: new requests are refused")
    check(rc == 0, "SIGTERM: exit status 0", rc)


def run_test(fn, *args):
    """Runs one test; an exception (a reset, a timeout) is a failure that
    does not stop the others, so the logs below still get printed."""
    try:
        return fn(*args)
    except Exception as ex:  # noqa: BLE001 - any escape is a test failure
        check(False, "%s raised %s" % (fn.__name__, type(ex).__name__), ex)
        return None


def main():
    if not os.path.exists(MODEL):
        print("skip: %s is missing (tools/scripts/fetch-model.sh)" % MODEL)
        return 77
    e = Engine("cpu", CPU_CONF % 16384)
    for t in (test_basic, test_streaming):
        run_test(t, e)
    answers = run_test(test_concurrency, e)
    for t in (test_openai, test_curl, test_errors, test_sample_from_top, test_disconnect, test_sigterm):
        run_test(t, e)
    if answers:
        run_test(test_preemption, answers)
    run_test(test_disconnect_queued_prefill)
    run_test(test_null_engine)
    for x in ENGINES:  # a test that raised may have left its engine running
        x.stop()
    if FAILS:
        print("t_engine: %d FAILED: %s" % (len(FAILS), "; ".join(FAILS)))
        for x in ENGINES:
            print("--- engine %s (exit %s) log tail:\n%s" % (x.name, x.proc.returncode, x.logtext()))
        return 1
    print("t_engine: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
