#!/usr/bin/env python3
"""An MQTT thing on paho-mqtt 2 (a client nobody here wrote), in MQTT 3.1.1
or MQTT 5: log in, publish readings at QoS 1 and wait for each PUBACK,
subscribe to the thing's commands and print the ones that arrive.

Every outcome is one JSON object per line on stdout:
  {"event": "connack", "reason": 0, "text": "Success"}
  {"event": "puback", "topic": ..., "reason": 0, "text": "Success"}
  {"event": "suback", "reasons": [1]}
  {"event": "command", "topic": ..., "payload": ...}
"""

import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def event(name, **fields):
    print(json.dumps({"event": name, **fields}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--version", choices=["3.1.1", "5"], required=True)
    p.add_argument("--publish", action="append", default=[], metavar="TOPIC=PAYLOAD",
                   help="a QoS 1 publish, waited for (repeatable)")
    p.add_argument("--subscribe", help="a topic filter to subscribe to")
    p.add_argument("--commands", type=int, default=0, help="commands to wait for before leaving")
    p.add_argument("--timeout", type=float, default=15.0)
    args = p.parse_args()

    protocol = mqtt.MQTTv5 if args.version == "5" else mqtt.MQTTv311
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-{args.user}-{args.version}",
                         protocol=protocol)
    client.username_pw_set(args.user, args.password)
    connected = threading.Event()
    subscribed = threading.Event()
    acks = {}
    commands = []

    def on_connect(_c, _u, _flags, reason, _props):
        event("connack", reason=reason.value, text=str(reason))
        connected.set()

    def on_publish(_c, _u, mid, reason, _props):
        acks[mid] = reason

    def on_subscribe(_c, _u, _mid, reasons, _props):
        event("suback", reasons=[r.value for r in reasons])
        subscribed.set()

    def on_message(_c, _u, msg):
        commands.append(msg)
        event("command", topic=msg.topic, payload=msg.payload.decode(errors="replace"))

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    if not connected.wait(args.timeout):
        event("timeout", waiting_for="connack")
        return 1
    if not client.is_connected():
        time.sleep(0.2)
        return 0
    if args.subscribe:
        client.subscribe(args.subscribe, qos=1)
        if not subscribed.wait(args.timeout):
            event("timeout", waiting_for="suback")
            return 1
    for spec in args.publish:
        topic, payload = spec.split("=", 1)
        info = client.publish(topic, payload, qos=1)
        deadline = time.time() + args.timeout
        while info.mid not in acks and client.is_connected() and time.time() < deadline:
            time.sleep(0.01)
        reason = acks.get(info.mid)
        if reason is None:
            event("puback", topic=topic, reason=None, text="no PUBACK (connection closed)")
        else:
            event("puback", topic=topic, reason=reason.value, text=str(reason))
        if not client.is_connected():
            client.reconnect()
            connected.clear()
            connected.wait(args.timeout)
    deadline = time.time() + args.timeout
    while len(commands) < args.commands and time.time() < deadline:
        time.sleep(0.02)
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
