#!/usr/bin/env python3
"""A stand-in EdgeX device service for the HTTP-thing command tests: it
answers the EdgeX v3 device command API on 127.0.0.1:PORT (printed on the
first line of stdout) and logs every command it receives as one JSON line.

  GET /api/v3/device/name/{device}/{command}  -> EventResponse with one reading
  PUT /api/v3/device/name/{device}/{command}  <- {"command": "value"}
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

values = {"speed": "1200", "flow": "3.5"}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def parts(self):
        p = self.path.split("?")[0].strip("/").split("/")
        if len(p) == 6 and p[:4] == ["api", "v3", "device", "name"]:
            return p[4], p[5]
        return None, None

    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        device, command = self.parts()
        if command not in values:
            return self.answer(404, {"apiVersion": "v3", "statusCode": 404, "message": "no such command"})
        print(json.dumps({"method": "GET", "device": device, "command": command}), flush=True)
        now = time.time_ns()
        self.answer(200, {
            "apiVersion": "v3", "statusCode": 200,
            "event": {"apiVersion": "v3", "deviceName": device, "sourceName": command, "origin": now,
                      "readings": [{"deviceName": device, "resourceName": command, "origin": now,
                                    "valueType": "Int64", "value": values[command]}]},
        })

    def do_PUT(self):
        device, command = self.parts()
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if command not in values or command not in body:
            return self.answer(400, {"apiVersion": "v3", "statusCode": 400, "message": "bad command"})
        values[command] = body[command]
        print(json.dumps({"method": "PUT", "device": device, "command": command, "value": body[command]}), flush=True)
        self.answer(200, {"apiVersion": "v3", "statusCode": 200})


server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
