"""Test helper: gives fake-gcs-server the XML-API object PUT that object_store uses for GCS.

fake-gcs-server implements GCS's JSON API, where uploads go to
`POST /upload/storage/v1/b/BUCKET/o?uploadType=multipart`, but not the XML API's
`PUT /BUCKET/OBJECT`, which object_store sends. This proxy turns such a PUT into a JSON-API
multipart upload (Content-Type and Cache-Control become object metadata, the
`x-goog-if-generation-match` header becomes `ifGenerationMatch`) and answers as GCS's XML API
does (`ETag`, `x-goog-generation`; 412 when the generation does not match). Every other request
is passed through unchanged.

Usage: gcs-xml-proxy.py PORT UPSTREAM_URL   (listens on 127.0.0.1 only; Python standard library)
"""

import http.server
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

PORT = int(sys.argv[1])
UPSTREAM = sys.argv[2].rstrip("/")
BOUNDARY = "keyrot-gcs-proxy-boundary"


def forward(method, url, headers, body):
    """(status, headers, body) of the upstream answer, error statuses included."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.items(), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.items(), error.read()


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def answer(self, status, headers, body):
        self.send_response(status)
        skip = {"content-length", "transfer-encoding", "connection", "date", "server"}
        for name, value in headers:
            if name.lower() not in skip:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        path = urllib.parse.urlsplit(self.path).path
        bucket, _, name = path.lstrip("/").partition("/")
        data = self.body() or b""
        metadata = {"name": urllib.parse.unquote(name)}
        if self.headers.get("Content-Type"):
            metadata["contentType"] = self.headers["Content-Type"]
        if self.headers.get("Cache-Control"):
            metadata["cacheControl"] = self.headers["Cache-Control"]
        media_type = self.headers.get("Content-Type") or "application/octet-stream"
        query = {"uploadType": "multipart"}
        if self.headers.get("x-goog-if-generation-match") is not None:
            query["ifGenerationMatch"] = self.headers["x-goog-if-generation-match"]
        upload = (
            f"--{BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
            + json.dumps(metadata)
            # fake-gcs-server takes the object's Content-Type from the media part.
            + f"\r\n--{BOUNDARY}\r\nContent-Type: {media_type}\r\n\r\n"
        ).encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
        url = f"{UPSTREAM}/upload/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(query)}"
        status, headers, body = forward(
            "POST", url, {"Content-Type": f"multipart/related; boundary={BOUNDARY}"}, upload
        )
        if status != 200:
            self.answer(status, headers, body)
            return
        created = json.loads(body)
        self.answer(
            200,
            [
                ("ETag", '"%s"' % created.get("etag", created.get("md5Hash", ""))),
                ("x-goog-generation", str(created["generation"])),
            ],
            b"",
        )

    def passthrough(self):
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        status, answer_headers, body = forward(
            self.command, UPSTREAM + self.path, headers, self.body()
        )
        if self.command == "HEAD":
            self.send_response(status)
            for name, value in answer_headers:
                if name.lower() not in {"transfer-encoding", "connection"}:
                    self.send_header(name, value)
            self.end_headers()
            return
        self.answer(status, answer_headers, body)

    do_GET = do_HEAD = do_POST = do_DELETE = do_PATCH = passthrough

    def log_message(self, format, *args):
        sys.stderr.write("gcs-xml-proxy: " + (format % args) + "\n")


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Proxy).serve_forever()
