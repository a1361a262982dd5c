#!/usr/bin/env python3
"""bench/sse-relay.py — the two ends of bench/stream-syscalls.

  sse-relay.py upstream --port P [--interval-ms MS] [--event-size B]
      An SSE upstream on 127.0.0.1:P. POST /v1/responses with
      {"stream": true, "bench_events": N} answers a streamed create of N
      response.output_text.delta events between response.created and
      response.completed, each event one chunk in its own send(), MS apart,
      so that a relay reads each one on its own. TCP_NODELAY; HTTP/1.1
      keep-alive; chunked. Prints "ready" once it listens.

  sse-relay.py client --url URL --streams S --events N [--auth VALUE]
      S streamed creates, one after the other over one keep-alive
      connection, each read to its response.completed event. Prints
      "streams=S events=E bytes=B" (E: events received, all streams) and
      exits 1 if a stream was cut short or answered other than 200.

Python's standard library only.
"""
import argparse
import http.client
import json
import socket
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOREM = ("Silent circuits hum, thoughts emerge in data streams, digital dawn "
         "breaks. The cache remembers what the model once said. ")


def response_obj(rid, status, text):
    return {
        "id": rid, "object": "response", "created_at": 1741386163,
        "status": status, "error": None, "incomplete_details": None,
        "model": "gpt-4o-2024-08-06", "store": True,
        "output": [] if status != "completed" else [{
            "type": "message", "id": "msg_" + rid[5:], "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text,
                         "annotations": []}]}],
        "usage": None if status != "completed" else {
            "input_tokens": 8, "output_tokens": 8, "total_tokens": 16},
    }


def sse(seq, etype, data):
    data["type"] = etype
    data["sequence_number"] = seq
    return ("event: %s\ndata: %s\n\n" % (etype, json.dumps(data))).encode()


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    counter = 0

    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        try:
            req = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            req = {}
        events = int(req.get("bench_events", 20))
        Upstream.counter += 1
        rid = "resp_%048x" % (int(time.time() * 1e6) * 4096 + Upstream.counter % 4096)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        pad = LOREM * (self.server.event_size // len(LOREM) + 1)
        seq = 0
        out = [sse(seq, "response.created",
                   {"response": response_obj(rid, "in_progress", "")})]
        for i in range(events):
            seq += 1
            delta = pad[:max(1, self.server.event_size - 160)]
            out.append(sse(seq, "response.output_text.delta",
                           {"item_id": "msg_" + rid[5:], "output_index": 0,
                            "content_index": 0, "delta": delta}))
        seq += 1
        out.append(sse(seq, "response.completed",
                       {"response": response_obj(rid, "completed", "done")}))
        for ev in out:
            time.sleep(self.server.interval)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def upstream(a):
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Upstream)
    srv.daemon_threads = True
    srv.interval = a.interval_ms / 1000.0
    srv.event_size = a.event_size
    print("ready", flush=True)
    srv.serve_forever()


def client(a):
    u = urllib.parse.urlsplit(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    body = json.dumps({"model": "gpt-4o", "input": "hi", "stream": True,
                       "bench_events": a.events}).encode()
    hdrs = {"Content-Type": "application/json", "Authorization": a.auth}
    total = nbytes = 0
    for s in range(a.streams):
        conn.request("POST", "/v1/responses", body, hdrs)
        r = conn.getresponse()
        if r.status != 200:
            sys.exit("stream %d: HTTP %d: %s" % (s, r.status, r.read()[:200]))
        done = False
        while True:
            line = r.readline()
            if not line:
                break
            nbytes += len(line)
            if line.startswith(b"event: "):
                total += 1
                if line.strip() == b"event: response.completed":
                    done = True
        if not done:
            sys.exit("stream %d: ended without response.completed" % s)
    print("streams=%d events=%d bytes=%d" % (a.streams, total, nbytes))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("upstream")
    u.add_argument("--port", type=int, required=True)
    u.add_argument("--interval-ms", type=float, default=2.0)
    u.add_argument("--event-size", type=int, default=250)
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--streams", type=int, default=20)
    c.add_argument("--events", type=int, default=20)
    c.add_argument("--auth", default="Bearer sk-bench-0000")
    a = p.parse_args()
    upstream(a) if a.cmd == "upstream" else client(a)


if __name__ == "__main__":
    main()
