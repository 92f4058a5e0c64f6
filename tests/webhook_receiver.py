"""A webhook receiver for the end-to-end tests: records every POST (headers, body, whether its
HMAC-SHA256 signature over timestamp, delivery id and body is valid and recent) as a JSON line, and answers 500 to the first N requests so the
sender's retries are exercised."""

import argparse
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--secret", required=True)
parser.add_argument("--log", required=True)
parser.add_argument("--fail-first", type=int, default=0)
parser.add_argument("--ready-file", required=True)
args = parser.parse_args()

lock = threading.Lock()
seen = {"n": 0}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        # What Vigil signs: "<timestamp>.<delivery id>.<body>"; a receiver refuses deliveries
        # older than five minutes (a replay) and, remembering ids, repeats.
        timestamp = self.headers.get("X-Vigil-Timestamp", "")
        delivery = self.headers.get("X-Vigil-Delivery", "")
        signed = f"{timestamp}.{delivery}.".encode() + body
        expected = "sha256=" + hmac.new(args.secret.encode(), signed, hashlib.sha256).hexdigest()
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
        with lock:
            seen["n"] += 1
            fail = seen["n"] <= args.fail_first
            with open(args.log, "a") as f:
                f.write(json.dumps({
                    "headers": dict(self.headers),
                    "body": json.loads(body),
                    "signature_valid": fresh and hmac.compare_digest(
                        expected, self.headers.get("X-Vigil-Signature", "")),
                    "answered": 500 if fail else 200,
                }) + "\n")
        self.send_response(500 if fail else 200)
        self.end_headers()

    def log_message(self, *a):
        pass


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
open(args.ready_file, "w").close()
server.serve_forever()
