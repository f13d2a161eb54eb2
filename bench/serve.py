#!/usr/bin/env python3
"""Server benchmarks on loopback, each starting `slimbert serve` itself and stopping it with SIGTERM.

  bench/serve.py load SLIMBERT MODEL [--requests 10000] [--clients 64]
      Mixed valid requests (sizes, sub-networks, budgets) interleaved with malformed JSON, wrong
      types, empty lists, oversized bodies, invalid UTF-8 and slow clients. Checks: no connection
      failure, every bad request its 4xx, a sample of answers equal to `slimbert predict` on the
      same sub-network (<= 1e-4), the server's RSS stable, a clean exit.
  bench/serve.py throughput SLIMBERT MODEL [--requests 400] [--clients 16]
      Requests per second with 16 concurrent clients against a one-at-a-time loop (P5).
  bench/serve.py slo SLIMBERT MODEL [--seconds 20] [--overload 3]
      Open-loop arrivals at `overload` x the full model's capacity, each with a budget of 2 x the
      full model's batch-1 latency: share of requests within budget, sub-networks used (P5).
  bench/serve.py memory SLIMBERT MODEL [--requests 200] [--int8]
      Peak RSS of the server over a sequential mix of valid requests against the P4 goal
      (1.2 x the fp32 weights + 100 MB), beside the RSS of `slimbert --help` (the libraries alone).
Prints one JSON object (and a short table on stderr).
"""
import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

WORDS = ("the cat sat on a mat while blue dogs ran past quickly and nobody said anything about "
         "cruise prizes free calls now lunch tomorrow meeting").split()


def start(slimbert, model, extra):
    log = open(f"/tmp/slimbert-serve-{os.getpid()}.log", "w+")
    p = subprocess.Popen([slimbert, "serve", model, "--port", "0", "--log-format", "none"] + extra,
                         stderr=log, stdout=subprocess.DEVNULL)
    for _ in range(1200):
        log.seek(0)
        m = re.search(r"listening on http://127.0.0.1:(\d+)", log.read())
        if m:
            return p, int(m.group(1)), log
        if p.poll() is not None:
            break
        time.sleep(0.1)
    log.seek(0)
    sys.exit("serve did not start:\n" + log.read())


def stop(p):
    p.send_signal(signal.SIGTERM)
    return p.wait(timeout=60)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def post(port, path, body, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, body=body, headers={"content-type": "application/json"})
        r = c.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        c.close()


def text(rng, n_words):
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def good_request(rng):
    inputs = [text(rng, rng.randint(1, 60)) for _ in range(rng.randint(1, 4))]
    body = {"inputs": inputs}
    kind = rng.random()
    if kind < 0.4:
        body["width"], body["depth"] = rng.choice([(1, 1), (0.5, 1), (1, 0.5), (0.5, 0.5)])
    elif kind < 0.8:
        body["latency_budget_ms"] = rng.choice([5, 20, 100, 1000])
    return body


BAD = [
    (b'{"inputs": ["unterminated', 422),
    (b'{"inputs": 42}', 422),
    (b'{"inputs": []}', 400),
    (b'{"inputs": "x", "width": 7}', 422),
    (b'{"inputs": "x", "width": 0.5, "latency_budget_ms": 3}', 422),
    (b'{"inputs": "' + b"a" * (2 << 20) + b'"}', 413),
    (b'{"inputs": "caf\xe9 \xff"}', 200),
]


def slow_client(port, seconds):
    """Sends half a request, then waits: the server must drop it after its read timeout."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inputs\":")
    time.sleep(seconds)
    try:
        s.sendall(b'"late"}' + b" " * 83)
        data = s.recv(1000)
    except OSError:
        data = b""
    s.close()
    return data


def cli_predict(slimbert, model, texts, width, depth):
    out = subprocess.run([slimbert, "predict", model, "--format", "text", "--width", str(width),
                          "--depth", str(depth)], input="\n".join(texts) + "\n", text=True,
                         capture_output=True, check=True).stdout
    return [json.loads(l) for l in out.splitlines()]


def load(a):
    p, port, _ = start(a.slimbert, a.model, ["--max-queue", str(a.queue), "--timeout", "2"])
    rng = random.Random(0)
    plan = []
    for i in range(a.requests):
        if i % 10 == 9:
            plan.append(("bad",) + BAD[(i // 10) % len(BAD)])
        else:
            plan.append(("good", json.dumps(good_request(rng)).encode(), 200))
    lock = threading.Lock()
    stats = {"sent": 0, "ok": 0, "status_429": 0, "bad_as_expected": 0, "unexpected": [],
             "connection_errors": 0}
    samples = []
    rss = [rss_mb(p.pid)]
    next_i = [0]

    def worker():
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= len(plan):
                return
            kind, body, want = plan[i]
            try:
                status, data, headers = post(port, "/predict", body)
            except OSError as e:
                with lock:
                    stats["connection_errors"] += 1
                continue
            with lock:
                stats["sent"] += 1
                if status == 429:
                    stats["status_429"] += 1
                elif status != want:
                    stats["unexpected"].append((i, status, data[:200].decode("utf8", "replace")))
                elif kind == "bad":
                    stats["bad_as_expected"] += 1
                else:
                    stats["ok"] += 1
                    if len(samples) < 20 and i % 37 == 0:
                        samples.append((json.loads(body), json.loads(data), headers))
                if i % 500 == 0:
                    rss.append(rss_mb(p.pid))

    slow = [threading.Thread(target=slow_client, args=(port, 4)) for _ in range(4)]
    for t in slow:
        t.start()
    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t in slow:
        t.join()
    elapsed = time.time() - t0
    rss.append(rss_mb(p.pid))
    peak = peak_rss_mb(p.pid)
    # Sampled answers against the CLI on the same sub-network.
    worst = 0.0
    for req, got, headers in samples:
        # TEI's answer: a list of {label, score} per input (one list for one text or pair).
        texts = req["inputs"] if isinstance(req["inputs"], list) else [req["inputs"]]
        if isinstance(req["inputs"], str) or (len(texts) == 2 and all(isinstance(t, str) for t in texts)):
            continue  # a text pair: predict's JSONL has no pairs in --format text
        want = cli_predict(a.slimbert, a.model, texts, headers["x-subnet-width"],
                           headers["x-subnet-depth"])
        for w, g in zip(want, got):
            scores = {p["label"]: p["score"] for p in g}
            for label, prob in w["probs"].items():
                worst = max(worst, abs(prob - scores[label]))
    rc = stop(p)
    result = {"bench": "load", "requests": a.requests, "clients": a.clients, "seconds": elapsed,
              "ok": stats["ok"], "bad_as_expected": stats["bad_as_expected"],
              "status_429": stats["status_429"], "unexpected": stats["unexpected"][:10],
              "unexpected_count": len(stats["unexpected"]),
              "connection_errors": stats["connection_errors"],
              "sampled_answers": len(samples), "max_abs_diff_vs_cli": worst,
              "rss_mb_start": rss[0], "rss_mb_end": rss[-1], "rss_mb_max_sampled": max(rss),
              "peak_rss_mb": peak, "exit_code": rc}
    print(json.dumps(result))
    return 0 if (not stats["unexpected"] and not stats["connection_errors"] and worst <= 1e-4
                 and rc == 0) else 1


def throughput(a):
    p, port, _ = start(a.slimbert, a.model, ["--max-queue", "4096"])
    rng = random.Random(1)
    bodies = [json.dumps({"inputs": [text(rng, rng.randint(8, 40))]}).encode()
              for _ in range(a.requests)]
    post(port, "/predict", bodies[0])  # warm-up

    def timed(n_clients):
        lat, idx, lock = [], [0], threading.Lock()

        def worker():
            # --keep-alive: one connection per client, as pooled HTTP clients do; otherwise a
            # new connection per request.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60) if a.keep_alive else None
            while True:
                with lock:
                    i = idx[0]
                    idx[0] += 1
                if i >= len(bodies):
                    if conn:
                        conn.close()
                    return
                t = time.perf_counter()
                if conn:
                    conn.request("POST", "/predict", body=bodies[i],
                                 headers={"content-type": "application/json"})
                    r = conn.getresponse()
                    r.read()
                    status = r.status
                else:
                    status, _, _ = post(port, "/predict", bodies[i])
                assert status == 200, status
                with lock:
                    lat.append((time.perf_counter() - t) * 1e3)

        t0 = time.perf_counter()
        ts = [threading.Thread(target=worker) for _ in range(n_clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wall = time.perf_counter() - t0
        lat.sort()
        return {"clients": n_clients, "requests_per_s": len(bodies) / wall,
                "p50_ms": lat[len(lat) // 2], "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))]}

    serial = timed(1)
    concurrent = timed(a.clients)
    rc = stop(p)
    out = {"bench": "throughput", "keep_alive": a.keep_alive, "serial": serial, "concurrent": concurrent,
           "speedup": concurrent["requests_per_s"] / serial["requests_per_s"], "exit_code": rc}
    print(json.dumps(out))
    return 0


def slo(a):
    p, port, _ = start(a.slimbert, a.model, ["--max-queue", "100000"] + (["--no-shed"] if a.no_shed else []))
    rng = random.Random(2)
    body = lambda: {"inputs": [text(rng, rng.randint(20, 40))]}
    # The full model's batch-1 latency, one request at a time.
    lat = []
    for _ in range(30):
        t = time.perf_counter()
        status, _, _ = post(port, "/predict", json.dumps(dict(body(), width=1, depth=1)).encode())
        assert status == 200
        lat.append((time.perf_counter() - t) * 1e3)
    full_ms = statistics.median(lat)
    budget = 2 * full_ms
    rate = a.overload * 1000.0 / full_ms  # arrivals per second
    n = int(rate * a.seconds)
    results, lock = [], threading.Lock()

    def one(b):
        t = time.perf_counter()
        status, data, headers = post(port, "/predict", b)
        ms = (time.perf_counter() - t) * 1e3
        # The server's own time from the request's arrival (queue, tokenization, inference).
        server_ms = float(headers.get("x-total-time", "nan"))
        with lock:
            results.append((status, ms, headers.get("x-subnet") if status == 200 else None, server_ms))

    threads = []
    t0 = time.perf_counter()
    for i in range(n):
        # Open loop: each request at its arrival time, whatever the server does.
        wait = t0 + i / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        b = json.dumps(dict(body(), latency_budget_ms=budget)).encode()
        th = threading.Thread(target=one, args=(b,))
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    rc = stop(p)
    ok = [r for r in results if r[0] == 200]
    met = sum(1 for r in ok if r[1] <= budget)
    used = {}
    server_met = sum(1 for r in ok if r[3] <= budget)
    for _, _, name, _ in ok:
        used[name] = used.get(name, 0) + 1
    out = {"bench": "slo", "full_model_batch1_ms": full_ms, "budget_ms": budget,
           "overload": a.overload, "arrivals_per_s": rate, "requests": n, "answered": len(ok),
           "shed_429": sum(1 for r in results if r[0] == 429),
           "answered_within_budget_share": met / max(1, len(ok)),
           "within_budget_share": met / max(1, n),
           "server_time_within_budget_share": server_met / max(1, n),
           "server_p50_ms": statistics.median([r[3] for r in ok]) if ok else None,
           "subnets_used": used,
           "p50_ms": statistics.median([r[1] for r in ok]) if ok else None,
           "p99_ms": sorted(r[1] for r in ok)[int(len(ok) * 0.99) - 1] if ok else None,
           "exit_code": rc}
    print(json.dumps(out))
    return 0


def memory(a):
    weights_mb = os.path.getsize(os.path.join(a.model, "model.safetensors")) / 1e6
    # The process with nothing loaded: libtorch and its 290 shared libraries.
    child = subprocess.Popen([a.slimbert, "--help"], stdout=subprocess.DEVNULL)
    _, _, usage = os.wait4(child.pid, 0)
    bare_mb = usage.ru_maxrss / 1024
    p, port, _ = start(a.slimbert, a.model, ["--int8"] if a.int8 else [])
    loaded_mb = rss_mb(p.pid)
    rng = random.Random(0)
    statuses = {}
    for _ in range(a.requests):
        body = good_request(rng)
        body["inputs"] = [text(rng, rng.randint(1, 120)) for _ in range(rng.randint(1, 8))]
        status, _, _ = post(port, "/predict", json.dumps(body).encode())
        statuses[status] = statuses.get(status, 0) + 1
    end_mb, peak_mb = rss_mb(p.pid), peak_rss_mb(p.pid)
    rc = stop(p)
    goal_mb = 1.2 * weights_mb + 100
    out = {"model": a.model, "int8": a.int8, "weights_mb": round(weights_mb, 1),
           "bare_process_mb": round(bare_mb, 1), "rss_loaded_mb": round(loaded_mb, 1),
           "rss_end_mb": round(end_mb, 1), "peak_rss_mb": round(peak_mb, 1),
           "goal_mb": round(goal_mb, 1), "met": peak_mb <= goal_mb, "statuses": statuses,
           "exit_code": rc}
    print(f"weights {weights_mb:.0f} MB, bare process {bare_mb:.0f} MB, loaded {loaded_mb:.0f} MB, "
          f"peak {peak_mb:.0f} MB (goal {goal_mb:.0f} MB)", file=sys.stderr)
    print(json.dumps(out))
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["load", "throughput", "slo", "memory"])
    ap.add_argument("slimbert")
    ap.add_argument("model")
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--clients", type=int, default=None)
    ap.add_argument("--queue", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--overload", type=float, default=3)
    ap.add_argument("--no-shed", action="store_true", help="slo: serve with --no-shed")
    ap.add_argument("--int8", action="store_true", help="memory: serve with --int8")
    ap.add_argument("--keep-alive", action="store_true",
                    help="throughput: one connection per client instead of one per request")
    a = ap.parse_args()
    if a.mode == "load":
        a.requests, a.clients = a.requests or 10000, a.clients or 64
        return load(a)
    if a.mode == "memory":
        a.requests = a.requests or 200
        return memory(a)
    if a.mode == "throughput":
        a.requests, a.clients = a.requests or 400, a.clients or 16
        return throughput(a)
    return slo(a)


if __name__ == "__main__":
    sys.exit(main())
