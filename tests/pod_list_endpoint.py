"""An HTTPS endpoint answering GET /api/v1/pods the way the Kubernetes API server documents it
(PodList pages with `limit` and `continue`, bearer-token authentication, `fieldSelector`), for
the end-to-end test of the daemon's API-server pod lookup. No Kubernetes API server can be
installed on this machine kind; this checks what the daemon sends (token, node selector, TLS
against the given CA, pagination) and what it does with the answer, not the server.

Every request is recorded as a JSON line (path, query, Authorization header, status)."""

import argparse
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--cert", required=True)
parser.add_argument("--key", required=True)
parser.add_argument("--token", required=True)
parser.add_argument("--node", required=True)
parser.add_argument("--pods", required=True, help="JSON list of {uid, name, namespace, node}")
parser.add_argument("--log", required=True)
parser.add_argument("--ready-file", required=True)
parser.add_argument("--max-page", type=int, default=500,
                    help="fewer items per page than asked for, as the API server may return")
args = parser.parse_args()

with open(args.pods) as f:
    PODS = json.load(f)
lock = threading.Lock()


def pod_object(p):
    return {
        "metadata": {"name": p["name"], "namespace": p["namespace"], "uid": p["uid"],
                     "labels": {"app": p["name"]}},
        "spec": {"nodeName": p["node"], "containers": [{"name": "main", "image": "x"}]},
        "status": {"phase": "Running"},
    }


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        auth = self.headers.get("Authorization", "")
        if auth != f"Bearer {args.token}":
            status, body = 401, {"kind": "Status", "status": "Failure", "reason": "Unauthorized",
                                 "code": 401}
        elif url.path != "/api/v1/pods":
            status, body = 404, {"kind": "Status", "reason": "NotFound", "code": 404}
        else:
            selector = query.get("fieldSelector", "")
            if not selector.startswith("spec.nodeName="):
                status, body = 403, {"kind": "Status", "reason": "Forbidden", "code": 403,
                                     "message": "only node-scoped listings are allowed here"}
            else:
                node = selector[len("spec.nodeName="):]
                matching = [p for p in PODS if p["node"] == node]
                limit = min(int(query.get("limit", "0") or 0) or len(matching) or 1,
                            args.max_page)
                start = int(query.get("continue", "0") or 0)
                page = matching[start:start + limit]
                more = start + limit < len(matching)
                status, body = 200, {
                    "kind": "PodList", "apiVersion": "v1",
                    "metadata": {"resourceVersion": "1", **({"continue": str(start + limit)} if more else {})},
                    "items": [pod_object(p) for p in page],
                }
        with lock, open(args.log, "a") as f:
            f.write(json.dumps({"path": url.path, "query": query, "authorization": auth,
                                "status": status}) + "\n")
        self.answer(status, body)

    def log_message(self, *a):
        pass


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(args.cert, args.key)
server.socket = context.wrap_socket(server.socket, server_side=True)
with open(args.ready_file, "w") as f:
    f.write("ready\n")
server.serve_forever()
