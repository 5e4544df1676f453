#!/usr/bin/env python3
"""t_scaleout: two engines (backend = null) behind nginx with the
configuration `topo-capture --emit-configs` generates, driven by
uring-bench through the balancer (loopback, bounded in time).

  - spread: with least_conn both instances answer (counted by uring-bench
    from the X-Locus-Instance header), every request succeeds;
  - streaming through the balancer: TTFT and inter-token gaps arrive (the
    null backend paces tokens with null_delay_us, so a buffering proxy
    would show up as one burst: ITL p50 near 0 and TTFT near the total);
  - SIGKILL of one instance under open-loop load: the requests lost are at
    most the ones in flight on it when it died (bound: the connections
    uring-bench holds, -c), the rest keep flowing to the other instance;
  - restart: once nginx's fail_timeout has passed the instance is back in
    rotation and answers again.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

SRC = os.environ.get("LOCUS_SRC", ".")
BIN = os.environ.get("LOCUS_BIN", "build/bin")
MODEL = os.path.join(SRC, "models/SmolLM2-135M-Instruct.Q4_1.gguf")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
FAILS = []


def check(cond, label, detail=""):
    print(("ok   " if cond else "FAIL ") + label + ("" if cond or detail == "" else ": " + str(detail)[:600]))
    if not cond:
        FAILS.append(label)
    return cond


def healthy(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=1) as r:
                if r.status == 200:
                    return True
        except Exception:
            pass
        time.sleep(0.1)
    return False


def port_base():
    """A base for the engines' and nginx's ports (base .. base + 100) below
    the kernel's ephemeral range: there a client socket of a test running
    alongside could hold one of them (it did: "Address already in use")."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    span = max(1000, min(10000, low - 10200))
    return 10000 + os.getpid() % span


class Lab:
    def __init__(self, tmp, model):
        self.tmp = tmp
        self.model = model
        self.base = port_base()
        self.lb = self.base + 100
        self.engines = {}
        self.nginx = None

    def emit(self):
        out = subprocess.run([os.path.join(BIN, "topo-capture"), "--emit-configs", os.path.join(self.tmp, "lb"),
                              "--synthetic", "pack:2 numa:1 core:2 pu:1", "--backend", "null", "--model", self.model,
                              "--base-port", str(self.base), "--lb-port", str(self.lb)],
                             capture_output=True, text=True, timeout=60)
        return out

    def start_engine(self, i):
        conf = os.path.join(self.tmp, "e%d.conf" % i)
        with open(conf, "w") as f:
            f.write("[server]\nlisten = 127.0.0.1:%d\nnet_threads = 1\ninstance = inst-%d\n"
                    "[model]\npath = %s\n[backend]\ntype = null\nnull_delay_us = 2000\n[numa]\npin = off\n"
                    "[batching]\nmax_seqs = 32\n[kv]\ntokens = 65536\n[limits]\nmax_waiting = 512\n"
                    "drain_timeout = 2s\n" % (self.base + i, i, self.model))
        log = open(os.path.join(self.tmp, "e%d.log" % i), "a")
        self.engines[i] = subprocess.Popen([os.path.join(BIN, "engine"), "--config", conf], stdout=log,
                                           stderr=subprocess.STDOUT)
        return healthy(self.base + i)

    def start_nginx(self):
        d = os.path.join(self.tmp, "lb")
        log = open(os.path.join(self.tmp, "nginx.log"), "w")
        self.nginx = subprocess.Popen([NGINX, "-p", d, "-c", os.path.join(d, "nginx-locus.conf"), "-g",
                                       "daemon off;"], stdout=log, stderr=subprocess.STDOUT)
        return healthy(self.lb)

    def bench(self, *args, timeout=120):
        js_path = os.path.join(self.tmp, "ub.json")
        if os.path.exists(js_path):
            os.unlink(js_path)
        cmd = [os.path.join(BIN, "uring-bench"), "--url", "http://127.0.0.1:%d" % self.lb, "-q", "--json", js_path,
               "--prompt", "Hello"] + [str(a) for a in args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        try:
            return json.load(open(js_path)), p
        except (OSError, ValueError):
            return None, p

    def stop(self):
        for e in self.engines.values():
            if e.poll() is None:
                e.kill()
                e.wait()
        if self.nginx and self.nginx.poll() is None:
            self.nginx.terminate()
            try:
                self.nginx.wait(5)
            except subprocess.TimeoutExpired:
                self.nginx.kill()


def main():
    for tool in ("engine", "uring-bench", "topo-capture"):
        if not os.path.exists(os.path.join(BIN, tool)):
            print("FAIL %s not built" % tool)
            return 1
    if not os.path.exists(NGINX):
        print("skip: nginx is not installed")
        return 77
    tmp = tempfile.mkdtemp(prefix="t_scaleout.")
    model = MODEL
    if not os.path.exists(model):
        model = os.path.join(tmp, "tiny.gguf")
        subprocess.run([os.path.join(BIN, "mkmodel"), "-o", model, "--layers", "1", "--dim", "64", "--heads", "2",
                        "--kv-heads", "2", "--ffn", "128", "--tokenizer",
                        os.path.join(SRC, "tests/data/tokenizers/ggml-vocab-llama-spm.gguf")], check=True,
                       capture_output=True)
    lab = Lab(tmp, model)
    try:
        out = lab.emit()
        if not check(out.returncode == 0, "topo-capture --emit-configs for two engines", out.stderr):
            return 1
        check(lab.start_engine(0) and lab.start_engine(1), "two engines up")
        check(lab.start_nginx(), "nginx with the generated configuration up")

        js, p = lab.bench("-n", 200, "-c", 8, "--max-tokens", 4)
        if check(js is not None, "spread: run", p.stderr):
            inst = js["instances"]
            check(js["requests"]["ok"] == 200 and js["requests"]["errors"] == 0, "spread: 200 ok through nginx",
                  js["requests"])
            check(set(inst) == {"inst-0", "inst-1"} and min(inst.values()) >= 40,
                  "spread: both instances answer (least_conn): %s" % inst)

        js, p = lab.bench("-n", 16, "-c", 4, "--stream", "--max-tokens", 32, "--ignore-eos")
        if check(js is not None, "stream: run", p.stderr):
            check(js["requests"]["ok"] == 16 and js["throughput"]["output_tokens"] == 16 * 32,
                  "stream: 16 streams of 32 tokens through nginx", js["requests"])
            itl, ttft, lat = js["itl_ms"]["p50"], js["ttft_ms"]["p50"], js["latency_ms"]["p50"]
            # 2 ms per step on the null backend: tokens must trickle, not arrive in one burst at the end
            check(itl >= 1.0 and ttft < lat / 2, "stream: unbuffered (ITL p50 %.2f ms, TTFT p50 %.1f of %.1f ms)"
                  % (itl, ttft, lat))

        # SIGKILL one instance 2 s into a 6 s open-loop run
        c = 8
        proc = subprocess.Popen([os.path.join(BIN, "uring-bench"), "--url", "http://127.0.0.1:%d" % lab.lb, "-q",
                                 "--json", os.path.join(tmp, "kill.json"), "--prompt", "Hello", "--rate", "100",
                                 "--duration", "6", "-c", str(c), "--max-tokens", "8"], stdout=subprocess.DEVNULL)
        time.sleep(2)
        lab.engines[1].send_signal(signal.SIGKILL)
        lab.engines[1].wait()
        proc.wait(60)
        js = json.load(open(os.path.join(tmp, "kill.json")))
        req = js["requests"]
        check(req["ok"] + req["errors"] >= 550, "kill: the open-loop run completed (%d requests)" %
              (req["ok"] + req["errors"]))
        check(req["errors"] <= c, "kill: %d requests lost, at most the %d in flight" % (req["errors"], c), js["errors"])
        check(js["instances"].get("inst-0", 0) >= 300, "kill: the other instance kept serving: %s" % js["instances"])

        # restart; after fail_timeout nginx sends it traffic again
        check(lab.start_engine(1), "restart: the killed instance is back up")
        time.sleep(6)
        js, p = lab.bench("-n", 200, "-c", 8, "--max-tokens", 4)
        if check(js is not None, "restart: run", p.stderr):
            check(js["requests"]["errors"] == 0 and js["instances"].get("inst-1", 0) >= 40,
                  "restart: back in rotation: %s" % js["instances"], js["requests"])
    finally:
        lab.stop()
        if FAILS:
            for f in ("e0.log", "e1.log", "nginx.log"):
                p = os.path.join(tmp, f)
                if os.path.exists(p):
                    print("--- %s (tail)" % f)
                    print(open(p).read()[-1500:])
        shutil.rmtree(tmp, ignore_errors=True)
    if FAILS:
        print("t_scaleout: %d FAILED: %s" % (len(FAILS), "; ".join(FAILS)))
        return 1
    print("t_scaleout: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
