#!/usr/bin/env python3
"""t_uring_bench: uring-bench against a local HTTP server with injected,
known behaviour (stdlib asyncio, loopback only, bounded in time).

  /delay/...  whole JSON responses; request k (in arrival order) waits
              DELAYS[k % 100] ms: 100 known values, so the reported
              percentiles can be checked against the exact ones.
  /stall/...  5 ms per request, except one 1 s stall of every response
              about 1 s into the run: open loop must show it in p99
              (latency from the intended send time); closed loop hides it
              from p99 (coordinated omission) but not from max.
  /sse/...    streamed: first token at 50 ms, then 8 one-token events
              20 ms apart, then one event carrying 2 tokens (logprobs)
              20 ms later; bytes are written in pieces that split events,
              lines and chunk framing anywhere.
  /bad/...    request k behaves per k % 6: ok, 500, closed mid-body,
              garbage status line, malformed SSE JSON, never answers.
  /inst/...   answers at once, naming its instance (X-Locus-Instance);
              two servers, A and B, check uring-bench's per-URL and
              per-instance counts with two --url.
  /echo/...   answers at once and keeps the request body (the sampling
              options uring-bench sends).

Tolerances: a reported percentile may not be below the injected value
by more than the histogram's relative error (0.1%); above, it may exceed
it by that error plus SLACK_MS for loopback, asyncio scheduling and the
client (measured: ~1-3 ms here; 15 ms allowed for noisy CI machines).
Maxima are not compared to the injected values: one scheduling hiccup of
the Python server moves them.
"""
import asyncio
import json
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ.get("LOCUS_BIN", "build/bin")
UB = os.path.join(BIN, "uring-bench")
REL_ERR = 1.0 / 1024
SLACK_MS = 15.0
FAILS = []

rng = random.Random(7)
DELAYS = [10 + 2 * i for i in range(100)]  # ms: 10, 12, ..., 208
rng.shuffle(DELAYS)


def check(cond, label, detail=""):
    print(("ok   " if cond else "FAIL ") + label + ("" if cond or not detail else ": " + str(detail)[:500]))
    if not cond:
        FAILS.append(label)
    return cond


class Server:
    def __init__(self, name="A"):
        self.name = name
        self.count = {}
        self.t0 = None
        self.stall_until = None
        self.stalled = False
        self.bodies = []

    def reset(self):
        self.count = {}
        self.t0 = None
        self.stall_until = None
        self.stalled = False

    def next_index(self, mode):
        k = self.count.get(mode, 0)
        self.count[mode] = k + 1
        return k

    async def handle(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                keep = await self.route(method, target, body, writer)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    @staticmethod
    def whole(status, obj, reason="OK", extra=b""):
        b = json.dumps(obj).encode()
        return b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n" % (
            status, reason.encode(), extra, len(b)) + b

    @staticmethod
    def completion(n_tokens):
        return {"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": "t" * n_tokens,
                "finish_reason": "length"}], "usage": {"prompt_tokens": 3, "completion_tokens": n_tokens,
                "total_tokens": 3 + n_tokens}}

    async def write_pieces(self, writer, data):
        """Writes data in random pieces (splitting lines, events and chunk framing)."""
        i = 0
        while i < len(data):
            k = rng.randint(1, 23)
            writer.write(data[i:i + k])
            await writer.drain()
            i += k
            if i < len(data) and rng.random() < 0.3:
                await asyncio.sleep(0.0003)

    async def route(self, method, target, body, writer):
        mode = target.split("/")[1]
        if mode == "reset":
            self.reset()
            writer.write(self.whole(200, {}))
            await writer.drain()
            return True
        k = self.next_index(mode)
        now = time.monotonic()
        if mode == "delay":
            await asyncio.sleep(DELAYS[k % 100] / 1000.0)
            writer.write(self.whole(200, self.completion(4)))
        elif mode == "stall":
            if self.t0 is None:
                self.t0 = now
            if not self.stalled and now - self.t0 >= 1.0:
                self.stalled = True
                self.stall_until = now + 1.0
            wait = 0.005
            if self.stall_until and now < self.stall_until:
                wait = max(wait, self.stall_until - now)
            await asyncio.sleep(wait)
            writer.write(self.whole(200, self.completion(1)))
        elif mode == "echo":
            self.bodies.append(body)
            writer.write(self.whole(200, self.completion(1)))
        elif mode == "inst":
            writer.write(self.whole(200, self.completion(1), extra=b"X-Locus-Instance: %s\r\n" % self.name.encode()))
        elif mode == "sse":
            await self.sse(writer, good=True)
            return True
        elif mode == "bad":
            kind = k % 6
            if kind == 0:
                writer.write(self.whole(200, self.completion(2)))
            elif kind == 1:
                writer.write(self.whole(500, {"error": {"message": "injected", "type": "server_error"}},
                                        "Internal Server Error"))
            elif kind == 2:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"choices\":")
                await writer.drain()
                return False
            elif kind == 3:
                writer.write(b"HELLO THERE\r\n\r\n")
                await writer.drain()
                return False
            elif kind == 4:
                await self.sse(writer, good=False)
                return True
            else:
                await asyncio.sleep(30)  # never answered within the client's timeout
                return False
        else:
            writer.write(self.whole(404, {"error": {"message": "no route"}}))
        await writer.drain()
        return True

    async def sse(self, writer, good):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")

        async def chunk(payload):
            await self.write_pieces(writer, b"%x\r\n" % len(payload) + payload + b"\r\n")

        def ev(obj):
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        await asyncio.sleep(0.050)
        if not good:
            await chunk(b"data: {\"choices\":[{\"text\":\"x\"}]}\n\ndata: {not json\n\n")
            await chunk(b"data: [DONE]\n\n")
            await self.write_pieces(writer, b"0\r\n\r\n")
            return
        await chunk(ev({"choices": [{"index": 0, "text": "a", "finish_reason": None}]}))
        for i in range(8):
            await asyncio.sleep(0.020)
            await chunk(ev({"choices": [{"index": 0, "text": "b", "finish_reason": None}]}))
        await asyncio.sleep(0.020)
        # two tokens in one event, and the usage chunk in the same write
        await chunk(ev({"choices": [{"index": 0, "text": "cd", "logprobs": {"tokens": ["c", "d"]},
                                     "finish_reason": "length"}]}) +
                    ev({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 11, "total_tokens": 14}}))
        await chunk(b"data: [DONE]\n\n")
        await self.write_pieces(writer, b"0\r\n\r\n")


def start_server(name="A"):
    srv = Server(name)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder = {}

    def run():
        asyncio.set_event_loop(loop)
        s = loop.run_until_complete(asyncio.start_server(srv.handle, "127.0.0.1", 0, backlog=512))
        holder["port"] = s.sockets[0].getsockname()[1]
        holder["server"] = s
        ready.set()
        loop.run_forever()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    ready.wait(10)
    return srv, loop, holder["port"]


def bench(port, path, *args, timeout=120):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [UB, "--url", "http://127.0.0.1:%d%s" % (port, path), "-q", "--json", out] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    try:
        with open(out) as f:
            js = json.load(f)
    except (OSError, ValueError):
        js = None
    os.unlink(out)
    return p, js


def reset(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /reset HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(4096)
    s.close()


def exact_percentile(values, p):
    v = sorted(values)
    if p >= 100:
        return v[-1]
    return v[max(1, math.ceil(p / 100.0 * len(v))) - 1]


def within(got, want, lo_slack=0.0):
    """lo_slack: gaps between events may look shorter than injected when the
    earlier event was itself received late (client-side jitter)."""
    return want * (1 - REL_ERR) - lo_slack <= got <= want * (1 + REL_ERR) + SLACK_MS


def test_delays(port, extra, label):
    reset(port)
    p, js = bench(port, "/delay/v1/completions", "-n", 100, "-c", 4, *extra)
    if not check(p.returncode == 0 and js, "%s: run" % label, p.stderr + p.stdout):
        return
    check(js["requests"]["ok"] == 100 and js["requests"]["errors"] == 0, "%s: 100 ok" % label, js["requests"])
    lat = js["latency_ms"]
    for key, pct in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("max", 100)):
        want = exact_percentile(DELAYS, pct)
        check(within(lat[key], want), "%s: %s %.2f ms vs injected %d ms" % (label, key, lat[key], want))
    want_avg = sum(DELAYS) / 100.0
    check(want_avg <= lat["avg"] <= want_avg + SLACK_MS, "%s: avg %.2f vs %.2f" % (label, lat["avg"], want_avg))
    check(js["throughput"]["output_tokens"] == 400, "%s: output tokens from usage" % label, js["throughput"])
    spec = dict((round(a, 4), b) for a, b in js["spectrum"]["latency_ms"])
    check(within(spec[75.0], exact_percentile(DELAYS, 75)), "%s: spectrum p75" % label)


def test_stall(port):
    reset(port)
    p, js = bench(port, "/stall/v1/completions", "--rate", 100, "-n", 300, "-c", 64, "--seed", 3)
    if check(p.returncode == 0 and js, "stall: open-loop run", p.stderr):
        lat = js["latency_ms"]
        check(js["requests"]["ok"] == 300, "stall: open loop 300 ok", js["requests"])
        check(lat["p99"] >= 800, "stall: open-loop p99 %.1f ms shows the 1 s stall" % lat["p99"])
        check(lat["p90"] >= 400, "stall: open-loop p90 %.1f ms (a third of the requests were due during it)"
              % lat["p90"])
        check(lat["p50"] < 100, "stall: open-loop p50 %.1f ms stays near the 5 ms service time" % lat["p50"])
    reset(port)
    p, js = bench(port, "/stall/v1/completions", "-c", 1, "--duration", 3)
    if check(p.returncode == 0 and js, "stall: closed-loop run", p.stderr):
        lat = js["latency_ms"]
        check(lat["max"] >= 900, "stall: closed-loop max %.1f ms has the stall" % lat["max"])
        check(lat["p99"] < 100, "stall: closed-loop p99 %.1f ms hides it (coordinated omission, as expected)"
              % lat["p99"])


def test_sse(port, extra, label):
    reset(port)
    p, js = bench(port, "/sse/v1/completions", "-n", 12, "-c", 3, "--stream", *extra)
    if not check(p.returncode == 0 and js, "%s: run" % label, p.stderr + p.stdout):
        return
    check(js["requests"]["ok"] == 12 and js["requests"]["errors"] == 0, "%s: 12 ok" % label, js)
    check(js["throughput"]["output_tokens"] == 12 * 11, "%s: tokens from the usage chunk" % label, js["throughput"])
    t = js["ttft_ms"]
    check(within(t["p50"], 50) and within(t["p90"], 50), "%s: ttft p50 %.2f p90 %.2f vs 50 ms" % (label, t["p50"],
                                                                                                   t["p90"]))
    i = js["itl_ms"]
    check(i["count"] == 12 * 10, "%s: one ITL sample per token after the first (%d)" % (label, i["count"]))
    spec = dict((round(a, 4), b) for a, b in js["spectrum"]["itl_ms"])
    # 8 of 10 gaps are 20 ms, 2 are 10 ms (the two-token event)
    check(within(spec[10.0], 10, 3) and within(spec[20.0], 10, 3), "%s: itl p10/p20 %.2f/%.2f vs 10 ms" % (
        label, spec[10.0], spec[20.0]))
    check(within(spec[50.0], 20, 3) and within(spec[75.0], 20, 3), "%s: itl p50/p75 %.2f/%.2f vs 20 ms" % (
        label, spec[50.0], spec[75.0]))
    tp = js["tpot_ms"]
    check(within(tp["p50"], 18, 3), "%s: tpot %.2f vs 18 ms (180 ms over 10 tokens)" % (label, tp["p50"]))


def test_targets(port_a, port_b):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [UB, "-q", "--json", out, "-n", 40, "-c", 4, "-t", 2, "--url", "http://127.0.0.1:%d/inst/x" % port_a,
           "--url", "http://127.0.0.1:%d/inst/x" % port_b]
    p = subprocess.run([str(a) for a in cmd], capture_output=True, text=True, timeout=60)
    js = json.load(open(out)) if p.returncode == 0 else None
    os.unlink(out)
    if not check(js is not None, "targets: two URLs", p.stderr):
        return
    t = js["targets"]
    inst = js["instances"]
    check(len(t) == 2 and t[0]["ok"] + t[1]["ok"] == 40 and t[0]["ok"] > 0 and t[1]["ok"] > 0,
          "targets: both URLs served, 40 in all", t)
    check(inst.get("A") == t[0]["ok"] and inst.get("B") == t[1]["ok"] and len(inst) == 2,
          "targets: per-instance counts from X-Locus-Instance match the per-URL counts", (inst, t))


def test_sampling_fields(srv, port):
    """The sampling options reach the request body; those not given are not sent."""
    srv.bodies = []
    p, js = bench(port, "/echo/v1/completions", "-n", 2, "-c", 1, "--temperature", 0.7, "--top-k", 5, "--top-p", 0.9,
                  "--max-tokens", 3)
    got = [json.loads(b) for b in srv.bodies]
    check(p.returncode == 0 and len(got) == 2 and all(
        g.get("temperature") == 0.7 and g.get("top_k") == 5 and abs(g.get("top_p", 0) - 0.9) < 1e-9 and
        g.get("max_tokens") == 3 for g in got), "sampling fields sent: temperature, top_k, top_p, max_tokens", got)
    srv.bodies = []
    p, js = bench(port, "/echo/v1/completions", "-n", 1, "-c", 1)
    got = [json.loads(b) for b in srv.bodies]
    check(p.returncode == 0 and len(got) == 1 and "top_k" not in got[0] and "top_p" not in got[0],
          "top_k, top_p not sent unless given", got)
    p = subprocess.run([UB, "--top-p", "0"], capture_output=True, text=True)
    check(p.returncode == 2 and "--top-p" in p.stderr, "usage: --top-p 0 refused", p.stderr)


def test_prompt_len(srv, port):
    """--prompt-len N: prompts of exactly N token ids, a different first id per request."""
    srv.bodies = []
    p, js = bench(port, "/echo/v1/completions", "-n", 3, "-c", 1, "--prompt-len", 7)
    got = [json.loads(b) for b in srv.bodies]
    prompts = [g.get("prompt") for g in got]
    check(p.returncode == 0 and len(prompts) == 3 and all(
        isinstance(q, list) and len(q) == 7 and all(isinstance(i, int) and 1000 <= i < 2000 for i in q)
        for q in prompts), "--prompt-len 7: three prompts of 7 ids in 1000..1999", prompts)
    check(len({q[0] for q in prompts if q}) == 3, "--prompt-len: a different first id per request", prompts)
    p = subprocess.run([UB, "--prompt-len", "4", "--prompt", "hi"], capture_output=True, text=True)
    check(p.returncode == 2 and "--prompt-len" in p.stderr, "usage: --prompt-len with --prompt refused", p.stderr)


def test_errors(port):
    reset(port)
    p, js = bench(port, "/bad/v1/completions", "-n", 60, "-c", 2, "--stream", "--timeout", 0.5)
    if not check(js is not None, "errors: run completes and writes its JSON", p.stderr):
        return
    e = js["errors"]
    check(js["requests"]["ok"] == 10 and js["requests"]["errors"] == 50, "errors: 10 ok, 50 errors", js["requests"])
    check(e["http"] == {"500": 10}, "errors: http 500 x10", e)
    check(e["closed"] == 10, "errors: closed mid-response x10", e)
    check(e["protocol"] == 10, "errors: garbage status line x10", e)
    check(e["stream"] == 10, "errors: malformed SSE x10", e)
    check(e["timeout"] == 10, "errors: never answered x10", e)
    # nothing listening: connect errors, exit status 1, no crash
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    p, js = bench(dead, "/", "-n", 5, "-c", 2)
    check(p.returncode == 1 and js and js["errors"]["connect"] == 5, "errors: refused connections counted",
          (p.returncode, js and js["errors"]))
    # bad usage
    p = subprocess.run([UB, "-n", "-3"], capture_output=True, text=True)
    check(p.returncode == 2 and "-n" in p.stderr, "usage: -n -3 refused", p.stderr)
    p = subprocess.run([UB, "--url", "https://x"], capture_output=True, text=True)
    check(p.returncode == 2 and "http://" in p.stderr, "usage: https refused", p.stderr)


def main():
    if not os.path.exists(UB):
        print("FAIL %s is missing" % UB)
        return 1
    srv, loop, port = start_server("A")
    srv_b, loop_b, port_b = start_server("B")
    test_delays(port, [], "delays (io_uring)")
    test_delays(port, ["--epoll"], "delays (epoll)")
    test_delays(port, ["-t", 2], "delays (2 threads, merged histograms)")
    test_sse(port, [], "sse (io_uring)")
    test_sse(port, ["--epoll"], "sse (epoll)")
    test_stall(port)
    test_targets(port, port_b)
    test_sampling_fields(srv, port)
    test_prompt_len(srv, port)
    test_errors(port)
    loop.call_soon_threadsafe(loop.stop)
    loop_b.call_soon_threadsafe(loop_b.stop)
    if FAILS:
        print("t_uring_bench: %d FAILED: %s" % (len(FAILS), "; ".join(FAILS)))
        return 1
    print("t_uring_bench: ok")
    return 0


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    os._exit(rc)  # the server thread still holds the never-answered requests
