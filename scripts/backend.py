#!/usr/bin/env python3
"""A tiny HTTP backend for the demo: answers every GET/POST with its own name.

usage: backend.py NAME HOST:PORT
"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = f"hello from {NAME} ({self.command} {self.path})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", NAME)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    NAME = sys.argv[1]
    host, port = sys.argv[2].rsplit(":", 1)
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()
