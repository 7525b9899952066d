#!/usr/bin/env python3
"""A small LwM2M 1.0 or 1.1 client on aiocoap, to test locus's LWM2M
servers against a CoAP stack nobody here wrote.

It bootstraps (POST /bs?ep=NAME to the bootstrap server, then serves the
server's Delete /0, Delete /1, Bootstrap-Discover of /0 when it speaks 1.1,
Write of a Security instance /0/N and of /1/0, and Bootstrap-Finish),
registers at the server URI of the Security instance that is not a
Bootstrap-Server account, and serves (when an Update fails it registers
again, and when that fails it falls back to the bootstrap server, as
LwM2M 1.1 says a client does):

  /3303/0/5700  temperature, readable and observable (TLV float or text)
  /3303/0/5605  Execute: reset min/max
  /3311/0/5850  on/off, writable (TLV boolean or text "0"/"1")
  /3311/0/5706  colour, writable (string)
  /1/0/9        Execute: Bootstrap-Request Trigger (bootstraps again)

With --bootstrap-account it keeps its own Bootstrap-Server account at
/0/0, as the specification lets a client do: a Delete of /0 leaves it in
place, and a Write over it is reported (event bootstrap-account-overwritten).

With --psk-identity and --psk-key it speaks DTLS 1.2 with that PSK (aiocoap's
tinydtls transport, DTLSSocket) to a coaps:// bootstrap server, and to a
coaps:// LwM2M server with the identity and key the bootstrap wrote into
its Security instance.

Every step is printed on stdout as one JSON object per line
({"event": ..., ...}), which is what the tests read. Commands on stdin, one
per line: "deregister", "update", "notify", "quit".
"""

import argparse
import asyncio
import base64
import json
import struct
import sys

import aiocoap
import cbor2
import aiocoap.resource as resource
from aiocoap import Code, Message

TEXT, LINK_FORMAT, SENML_JSON, SENML_CBOR, TLV = 0, 40, 110, 112, 11542
# SenML CBOR labels (RFC 8428 Table 6).
CBOR_LABELS = {-2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs", 0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd"}


def event(name, **fields):
    print(json.dumps({"event": name, **fields}), flush=True)


def tlv_decode(data):
    """Decode OMA TLV into [(kind, id, value or children)]; kind 0 = object
    instance, 1 = resource instance, 2 = multiple resource, 3 = resource."""
    out, i = [], 0
    while i < len(data):
        t = data[i]
        i += 1
        kind = t >> 6
        id_len = 2 if t & 0x20 else 1
        ident = int.from_bytes(data[i : i + id_len], "big")
        i += id_len
        len_len = (t >> 3) & 3
        if len_len:
            length = int.from_bytes(data[i : i + len_len], "big")
            i += len_len
        else:
            length = t & 7
        value = data[i : i + length]
        if len(value) != length:
            raise ValueError(f"TLV entry {ident} is cut: {len(value)} of {length} bytes")
        i += length
        out.append((kind, ident, tlv_decode(value) if kind in (0, 2) else value))
    return out


def tlv_resource(ident, value):
    """One resource entry (kind 3)."""
    n = len(value)
    head = 0xC0 | (0x20 if ident > 0xFF else 0)
    ident_bytes = ident.to_bytes(2 if ident > 0xFF else 1, "big")
    if n < 8:
        return bytes([head | n]) + ident_bytes + value
    if n < 0x100:
        return bytes([head | 0x08]) + ident_bytes + bytes([n]) + value
    return bytes([head | 0x10]) + ident_bytes + n.to_bytes(2, "big") + value


def resources_of(request):
    """The resources of a Write payload, by id, as TLV would carry them
    (bytes): TLV whether it holds an object instance or resources, or
    SenML JSON (LwM2M 1.1; names are paths, `bn` carried forward)."""
    if int(request.opt.content_format or 0) == SENML_JSON:
        return senml_resources(json.loads(request.payload))
    if int(request.opt.content_format or 0) == SENML_CBOR:
        records = []
        for r in cbor2.loads(request.payload):
            record = {CBOR_LABELS[k]: v for k, v in r.items()}
            if isinstance(record.get("vd"), bytes):
                record["vd"] = base64.urlsafe_b64encode(record["vd"]).decode().rstrip("=")
            records.append(record)
        return senml_resources(records)
    entries = tlv_decode(request.payload)
    if len(entries) == 1 and entries[0][0] == 0:
        entries = entries[0][2]
    return {ident: value for kind, ident, value in entries if kind == 3}


def senml_resources(records):
    out = {}
    base = ""
    for record in records:
        base = record.get("bn", base)
        name = base + record.get("n", "")
        ident = int(name.rstrip("/").rsplit("/", 1)[1])
        if "vs" in record:
            value = record["vs"].encode()
        elif "vb" in record:
            value = b"\x01" if record["vb"] else b"\x00"
        elif "vd" in record:
            data = record["vd"]
            value = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        elif isinstance(record.get("v"), (int, float)) and float(record["v"]).is_integer():
            x = int(record["v"])
            value = x.to_bytes(max(1, (x.bit_length() + 8) // 8), "big", signed=True)
        else:
            value = struct.pack(">d", float(record["v"]))
        out[ident] = value
    return out


def refuses(client, request):
    """A SenML-only client (an LwM2M 1.1 client built without TLV) answers
    a TLV write 4.15 Unsupported Content-Format; a SenML CBOR-only one
    refuses SenML JSON too."""
    cf = int(request.opt.content_format or 0)
    if client.args.format == "senml":
        return cf == TLV
    if client.args.format == "senml-cbor":
        return cf in (TLV, SENML_JSON)
    return False


def tlv_int(b):
    return int.from_bytes(b, "big", signed=True)


class Client:
    def __init__(self, args):
        self.args = args
        self.ctx = None
        self.server_uri = None
        # Security instances by id: {"uri", "bootstrap", "ssid"}.
        self.security = {}
        if args.bootstrap_account:
            self.security[0] = {"uri": args.bootstrap, "bootstrap": True, "ssid": None}
        self.lifetime = args.lifetime
        self.location = None
        self.finished = asyncio.Event()
        self.rebootstrap = asyncio.Event()
        self.temperature = args.start_temperature
        self.switch = False
        self.colour = ""

    # --- what the servers call -------------------------------------------

    def site(self):
        site = resource.Site()
        client = self

        class BootstrapDelete(resource.Resource):
            def __init__(self, path):
                super().__init__()
                self.path = path

            async def render_delete(self, request):
                event("bootstrap-delete", path=self.path)
                if self.path == "/0":
                    # The Bootstrap-Server account survives (LwM2M 1.1 §5.2.7.5).
                    client.security = {i: a for i, a in client.security.items() if a["bootstrap"]}
                    client.server_uri = None
                return Message(code=Code.DELETED)

            async def render_get(self, request):
                if self.path != "/0" or client.args.lwm2m != "1.1":
                    # A 1.0 client knows no Bootstrap-Discover.
                    event("bootstrap-discover", path=self.path, answered=False)
                    return Message(code=Code.METHOD_NOT_ALLOWED)
                links = ["</>;lwm2m=1.1"]
                for i, a in sorted(client.security.items()):
                    if a["bootstrap"]:
                        links.append(f"</0/{i}>")
                    else:
                        links.append(f'</0/{i}>;ssid={a["ssid"]};uri="{a["uri"]}"')
                event("bootstrap-discover", path=self.path, answered=True, instances=sorted(client.security))
                return Message(code=Code.CONTENT, payload=",".join(links).encode(), content_format=LINK_FORMAT)

        class SecurityInstance(resource.Resource):
            def __init__(self, instance):
                super().__init__()
                self.instance = instance
                self.path = f"/0/{instance}"

            async def render_put(self, request):
                if refuses(client, request):
                    event("bootstrap-write-refused", path=self.path, why="no TLV")
                    return Message(code=Code.UNSUPPORTED_CONTENT_FORMAT)
                try:
                    res = resources_of(request)
                    uri = res[0].decode()
                    fields = {
                        "server_uri": uri,
                        "bootstrap_server": res[1] == b"\x01",
                        "security_mode": tlv_int(res[2]),
                        "short_server_id": tlv_int(res[10]),
                        "psk_identity": res.get(3, b"").decode(errors="replace"),
                        # The key itself is never printed.
                        "psk_key_bytes": len(res.get(5, b"")),
                    }
                except (KeyError, ValueError, UnicodeDecodeError) as e:
                    event("bootstrap-write-refused", path=self.path, why=str(e))
                    return Message(code=Code.BAD_REQUEST, payload=str(e).encode())
                old = client.security.get(self.instance)
                if old is not None and old["bootstrap"]:
                    event("bootstrap-account-overwritten", path=self.path)
                client.security[self.instance] = {
                    "uri": uri,
                    "bootstrap": fields["bootstrap_server"],
                    "ssid": fields["short_server_id"],
                }
                if not fields["bootstrap_server"]:
                    client.server_uri = uri
                    if uri.startswith("coaps://"):
                        client.dtls_credentials(uri, res.get(3, b""), res.get(5, b""))
                event("bootstrap-write", path=self.path, content_format=int(request.opt.content_format or 0), **fields)
                return Message(code=Code.CHANGED)

        class ServerInstance(resource.Resource):
            async def render_put(self, request):
                if refuses(client, request):
                    event("bootstrap-write-refused", path="/1/0", why="no TLV")
                    return Message(code=Code.UNSUPPORTED_CONTENT_FORMAT)
                try:
                    res = resources_of(request)
                    fields = {
                        "short_server_id": tlv_int(res[0]),
                        "lifetime": tlv_int(res[1]),
                        "binding": res[7].decode(),
                    }
                except (KeyError, ValueError, UnicodeDecodeError) as e:
                    event("bootstrap-write-refused", path="/1/0", why=str(e))
                    return Message(code=Code.BAD_REQUEST, payload=str(e).encode())
                client.lifetime = fields["lifetime"]
                event("bootstrap-write", path="/1/0", content_format=int(request.opt.content_format or 0), **fields)
                return Message(code=Code.CHANGED)

        class BootstrapFinish(resource.Resource):
            async def render_post(self, request):
                accounts = sorted(i for i, a in client.security.items() if a["bootstrap"])
                event("bootstrap-finish", bootstrap_accounts=accounts)
                client.finished.set()
                return Message(code=Code.CHANGED)

        class Temperature(resource.ObservableResource):
            async def add_observation(self, request, serverobservation):
                await super().add_observation(request, serverobservation)
                event("observe", path="/3303/0/5700")

            async def render_get(self, request):
                value = client.temperature
                if client.args.format == "tlv":
                    return Message(
                        payload=tlv_resource(5700, struct.pack(">d", value)),
                        content_format=TLV,
                    )
                if client.args.format == "senml":
                    # LwM2M 1.1 SenML JSON: the base name and the resource id.
                    pack = [{"bn": "/3303/0/", "n": "5700", "v": value}]
                    return Message(payload=json.dumps(pack).encode(), content_format=SENML_JSON)
                if client.args.format == "senml-cbor":
                    pack = [{-2: "/3303/0/", 0: "5700", 2: value}]
                    return Message(payload=cbor2.dumps(pack), content_format=SENML_CBOR)
                return Message(payload=repr(value).encode(), content_format=TEXT)

        class Writable(resource.Resource):
            def __init__(self, path, kind):
                super().__init__()
                self.path, self.kind = path, kind

            async def render_put(self, request):
                cf = int(request.opt.content_format or 0)
                if refuses(client, request):
                    event("write-refused", path=self.path, why="no TLV")
                    return Message(code=Code.UNSUPPORTED_CONTENT_FORMAT)
                try:
                    if cf in (TLV, SENML_JSON, SENML_CBOR):
                        raw = resources_of(request)[int(self.path.rsplit("/", 1)[1])]
                        value = raw == b"\x01" if self.kind == "bool" else raw.decode()
                    else:
                        text = request.payload.decode()
                        if self.kind == "bool":
                            if text not in ("0", "1"):
                                raise ValueError(f"{text!r} is not 0 or 1")
                            value = text == "1"
                        else:
                            value = text
                except (KeyError, ValueError, IndexError, UnicodeDecodeError) as e:
                    event("write-refused", path=self.path, why=str(e))
                    return Message(code=Code.BAD_REQUEST, payload=str(e).encode())
                if self.kind == "bool":
                    client.switch = value
                else:
                    client.colour = value
                event("write", path=self.path, value=value, content_format=cf)
                return Message(code=Code.CHANGED)

        class Executable(resource.Resource):
            def __init__(self, path):
                super().__init__()
                self.path = path

            async def render_post(self, request):
                event("execute", path=self.path, args=request.payload.decode(errors="replace"))
                if self.path == "/1/0/9":
                    client.rebootstrap.set()
                return Message(code=Code.CHANGED)

        self.temperature_resource = Temperature()
        site.add_resource(["0"], BootstrapDelete("/0"))
        site.add_resource(["1"], BootstrapDelete("/1"))
        for i in range(4):
            site.add_resource(["0", str(i)], SecurityInstance(i))
        site.add_resource(["1", "0"], ServerInstance())
        site.add_resource(["bs"], BootstrapFinish())
        site.add_resource(["3303", "0", "5700"], self.temperature_resource)
        site.add_resource(["3303", "0", "5605"], Executable("/3303/0/5605"))
        site.add_resource(["3311", "0", "5850"], Writable("/3311/0/5850", "bool"))
        site.add_resource(["3311", "0", "5706"], Writable("/3311/0/5706", "str"))
        site.add_resource(["1", "0", "9"], Executable("/1/0/9"))
        return site

    def dtls_credentials(self, uri, identity, key):
        """Use PSK `identity` and `key` for requests to coaps:// `uri`."""
        self.ctx.client_credentials.load_from_dict(
            {f"{uri}/*": {"dtls": {"psk": bytes(key), "client-identity": bytes(identity)}}}
        )

    # --- what the client does ---------------------------------------------

    async def request(self, msg, timeout=10):
        return await asyncio.wait_for(self.ctx.request(msg).response, timeout)

    async def bootstrap(self):
        self.finished.clear()
        msg = Message(code=Code.POST, uri=f"{self.args.bootstrap}/bs?ep={self.args.endpoint}")
        # The server may start deleting before its answer arrives here.
        event("bootstrap-request")
        resp = await self.request(msg)
        event("bootstrap-requested", code=str(resp.code), diagnostic=resp.payload.decode(errors="replace"))
        if resp.code != Code.CHANGED:
            return False
        await asyncio.wait_for(self.finished.wait(), 30)
        return True

    async def register(self):
        if self.server_uri is None:
            event("register-failed", why="no LwM2M server account after the bootstrap")
            return False
        query = f"ep={self.args.endpoint}&lt={self.lifetime}&lwm2m={self.args.lwm2m}&b=U"
        msg = Message(
            code=Code.POST,
            uri=f"{self.server_uri}/rd?{query}",
            payload=self.args.links.encode(),
            content_format=LINK_FORMAT,
        )
        resp = await self.request(msg)
        if resp.code != Code.CREATED:
            event("register-failed", code=str(resp.code), diagnostic=resp.payload.decode(errors="replace"))
            return False
        self.location = "/" + "/".join(resp.opt.location_path)
        event("registered", location=self.location, server_uri=self.server_uri)
        return True

    async def update(self):
        resp = await self.request(Message(code=Code.POST, uri=f"{self.server_uri}{self.location}"))
        event("updated", code=str(resp.code))
        return resp.code == Code.CHANGED

    async def deregister(self):
        if self.location is None:
            return
        try:
            resp = await self.request(Message(code=Code.DELETE, uri=f"{self.server_uri}{self.location}"), 5)
            event("deregistered", code=str(resp.code))
        except (asyncio.TimeoutError, aiocoap.error.Error) as e:
            event("deregister-failed", why=repr(e))
        self.location = None

    async def tick(self):
        """Change the temperature and notify observers."""
        while True:
            await asyncio.sleep(self.args.notify_every)
            self.temperature = round(self.temperature + 0.25, 2)
            self.temperature_resource.updated_state()

    async def commands(self):
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            cmd = line.strip()
            if not line or cmd == "quit":
                event("quit")
                loop.stop()
                return
            if cmd == "deregister":
                await self.deregister()
            elif cmd == "update":
                await self.update()
            elif cmd == "notify":
                self.temperature_resource.updated_state()

    async def run(self):
        transports = ["udp6"]
        if self.args.psk_identity is not None:
            transports.append("tinydtls")
        self.ctx = await aiocoap.Context.create_server_context(
            self.site(), bind=("127.0.0.1", 0), transports=transports
        )
        if self.args.psk_identity is not None:
            self.dtls_credentials(
                self.args.bootstrap, self.args.psk_identity.encode(), bytes.fromhex(self.args.psk_key)
            )
        event("started")
        asyncio.create_task(self.commands())
        if self.args.notify_every > 0:
            asyncio.create_task(self.tick())
        while True:
            try:
                ok = await self.bootstrap() and await self.register()
            except (asyncio.TimeoutError, aiocoap.error.Error) as e:
                event("error", why=repr(e))
                ok = False
            if not ok:
                await asyncio.sleep(self.args.retry)
                continue
            # Registered: update at half the lifetime (or --update-every)
            # until told to bootstrap, or until an Update fails.
            every = self.args.update_every or max(self.lifetime / 2, 1)
            failed = False
            while True:
                try:
                    await asyncio.wait_for(self.rebootstrap.wait(), every)
                    break
                except asyncio.TimeoutError:
                    if self.location is not None:
                        try:
                            ok = await self.update()
                        except (asyncio.TimeoutError, aiocoap.error.Error) as e:
                            event("error", why=repr(e))
                            ok = False
                        if not ok:
                            failed = True
                            break
            self.rebootstrap.clear()
            if failed:
                # LwM2M 1.1 (6.2.2, "Registration Update"): a failed Update
                # is followed by a Register; when that fails too the client
                # falls back to its Bootstrap-Server (the loop above).
                event("update-failed", server_uri=self.server_uri)
                self.location = None
                try:
                    if await self.register():
                        continue
                except (asyncio.TimeoutError, aiocoap.error.Error) as e:
                    event("error", why=repr(e))
                event("fallback-to-bootstrap")
                continue
            # Answer the Execute before leaving the old server.
            await asyncio.sleep(0.1)
            await self.deregister()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", required=True, help="coap://host:port of the bootstrap server")
    p.add_argument("--endpoint", required=True, help="endpoint client name")
    p.add_argument("--lifetime", type=int, default=60, help="lifetime until the bootstrap writes one")
    p.add_argument("--format", choices=["tlv", "text", "senml", "senml-cbor"], default="tlv", help="how values are sent; senml: SenML JSON only, TLV writes are refused (4.15); senml-cbor: SenML CBOR only")
    p.add_argument("--notify-every", type=float, default=0.3, help="seconds between temperature changes (0: never)")
    p.add_argument("--start-temperature", type=float, default=20.0)
    p.add_argument("--links", default="</1/0>,</3/0>,</3303/0>,</3311/0>", help="the Register payload")
    p.add_argument("--lwm2m", choices=["1.0", "1.1"], default="1.0", help="the LwM2M version it speaks (1.1 answers Bootstrap-Discover)")
    p.add_argument("--bootstrap-account", action="store_true", help="keep a Bootstrap-Server account at /0/0")
    p.add_argument("--retry", type=float, default=1.0, help="seconds before bootstrapping again after a failure")
    p.add_argument("--update-every", type=float, default=None, help="seconds between Updates (default: half the lifetime)")
    p.add_argument("--psk-identity", help="PSK identity for a coaps:// bootstrap server (DTLS 1.2)")
    p.add_argument("--psk-key", help="its key, in hex")
    args = p.parse_args()
    loop = asyncio.new_event_loop()
    loop.create_task(Client(args).run())
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
