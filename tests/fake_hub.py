"""A minimal local Hugging Face Hub for upload tests: only what `create_repo` + `upload_folder` use.

huggingface_hub 2.4 talks to these endpoints when it pushes a folder (reference/ecosystem.md §6.2):
`POST /api/repos/create`, `POST /api/validate-yaml`, `POST /api/{type}s/{repo}/preupload/{rev}` and
`POST /api/{type}s/{repo}/commit/{rev}` (NDJSON). Preupload answers "regular" for every file, so
contents arrive inline as base64 and neither LFS nor Xet is involved. Anything else is a 404 and is
recorded in `unhandled` (every request is in `requests`), so a test can tell when the client needs an
endpoint this fake lacks. Bodies over MAX_BODY_BYTES are refused; leaving the context stops the server.
"""
import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

MAX_BODY_BYTES = 64 * 1024 * 1024
_REPO_API = re.compile(r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/(?P<op>preupload|commit)/(?P<rev>[^/?]+)")


class FakeHub:
    """Threaded HTTP server on 127.0.0.1 holding repos in memory; use as a context manager."""

    def __init__(self):
        self.repos = {}  # (repo_type, repo_id) -> {"files": {path: bytes}, "commits": [(oid, summary)], "private"}
        self.requests = []  # "METHOD /path" of every request, in order
        self.unhandled = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def files(self, repo_id, repo_type="model"):
        with self.lock:
            return dict(self.repos[(repo_type, repo_id)]["files"])

    def commits(self, repo_id, repo_type="model"):
        with self.lock:
            return list(self.repos[(repo_type, repo_id)]["commits"])

    def create_repo(self, payload):
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.endpoint}/{prefix}{repo_id}"
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                return 409, {"error": "You already created this repo", "url": url}
            self.repos[(repo_type, repo_id)] = {"files": {}, "commits": [], "private": payload.get("visibility")}
        return 200, {"url": url, "name": repo_id}

    def commit(self, repo_type, repo_id, body):
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        with self.lock:
            repo = self.repos[(repo_type, repo_id)]
            summary = ""
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    summary = value.get("summary", "")
                elif key == "file":
                    if value.get("encoding") != "base64":
                        return 400, {"error": f"unsupported encoding for {value['path']}"}
                    repo["files"][value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    repo["files"].pop(value["path"], None)
                else:
                    return 400, {"error": f"this fake Hub does not accept '{key}' operations"}
            previous = repo["commits"][-1][0] if repo["commits"] else ""
            oid = hashlib.sha1(previous.encode() + body).hexdigest()
            repo["commits"].append((oid, summary))
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return 200, {"commitUrl": f"{self.endpoint}/{prefix}{repo_id}/commit/{oid}", "commitOid": oid}

    def has_repo(self, repo_type, repo_id):
        with self.lock:
            return (repo_type, repo_id) in self.repos


def _validate_yaml(content):
    """The Hub rejects a README whose front matter is not a YAML mapping; do the same."""
    match = re.match(r"^---\n(.*?)\n---\n", content, flags=re.S)
    if match is None:
        return []
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return [{"message": f"invalid YAML: {err}"}]
    return [] if isinstance(data, dict) else [{"message": "metadata must be a YAML mapping"}]


def _handler_for(hub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, status, payload, error_code=None):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if error_code:
                self.send_header("X-Error-Code", error_code)
            self.end_headers()
            self.wfile.write(data)

        def _record(self):
            path = self.path.split("?")[0]
            with hub.lock:
                hub.requests.append(f"{self.command} {path}")
            return path

        def do_POST(self):
            path = self._record()
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self.close_connection = True
                return self._reply(413, {"error": f"body of {length} bytes exceeds the fake Hub's limit"})
            body = self.rfile.read(length)
            if path == "/api/repos/create":
                return self._reply(*hub.create_repo(json.loads(body)))
            if path == "/api/validate-yaml":
                errors = _validate_yaml(json.loads(body)["content"])
                return self._reply(400 if errors else 200, {"errors": errors, "warnings": []})
            match = _REPO_API.match(path)
            if match is None:
                return self._unhandled()
            repo_type, repo_id = match["type"][:-1], match["repo"]
            if not hub.has_repo(repo_type, repo_id):
                return self._reply(404, {"error": "Repository not found"}, error_code="RepoNotFound")
            if match["op"] == "preupload":
                files = json.loads(body)["files"]
                modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                return self._reply(200, {"files": modes})
            return self._reply(*hub.commit(repo_type, repo_id, body))

        def do_GET(self):
            self._record()
            self._unhandled()

        def _unhandled(self):
            with hub.lock:
                hub.unhandled.append(f"{self.command} {self.path}")
            self._reply(404, {"error": f"fake Hub has no endpoint for {self.command} {self.path}"})

    return Handler
