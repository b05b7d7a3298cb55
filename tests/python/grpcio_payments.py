"""A payments client that steadfast did not write: Python grpcio, retrying
with gRPC's own retry policy (service config), against the payments server.

Usage: python3 grpcio_payments.py HOST:PORT < payments.jsonl > results.jsonl

Each input line is {"id", "kind": "deposit"|"transfer", "account"|"from"+"to",
"cents"}; each output line is {"id", "ok": true, "sent", "transfer_id",
"balance"} or {"id", "ok": false, "sent", "code", "details"}, where "sent" counts
the calls this script made (each with gRPC's own retries inside). The messages are encoded by hand
(proto3 wire format) so that no generated code or protoc is needed.

gRPC's retry policy allows at most 5 attempts per call; a call that still
fails with a transient code is sent again by this script with the same
payment id (the idempotency key), at most ROUNDS times, as an application
would.
"""

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc

SERVICE = "steadfast.payments.Ledger"
TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED}
ROUNDS = 10
SERVICE_CONFIG = json.dumps({
    "methodConfig": [{
        "name": [{"service": SERVICE}],
        "retryPolicy": {
            "maxAttempts": 5,
            "initialBackoff": "0.01s",
            "maxBackoff": "0.3s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED"],
        },
    }],
})


def varint(value):
    value &= (1 << 64) - 1  # int64 as two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def string_field(number, text):
    data = text.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def int64_field(number, value):
    return varint(number << 3) + varint(value)


def encode(payment):
    if payment["kind"] == "deposit":
        return (string_field(1, payment["id"]) + string_field(2, payment["account"])
                + int64_field(3, payment["cents"]))
    return (string_field(1, payment["id"]) + string_field(2, payment["from"])
            + string_field(3, payment["to"]) + int64_field(4, payment["cents"]))


def read_varint(data, at):
    shift = value = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def decode_receipt(data):
    receipt = {"transfer_id": "", "balance": 0}
    at = 0
    while at < len(data):
        tag, at = read_varint(data, at)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, at = read_varint(data, at)
            if number == 2:
                receipt["balance"] = value - (1 << 64) if value >= 1 << 63 else value
        elif wire == 2:
            length, at = read_varint(data, at)
            if number == 1:
                receipt["transfer_id"] = data[at:at + length].decode()
            at += length
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return receipt


def main():
    channel = grpc.insecure_channel(sys.argv[1], options=[
        ("grpc.enable_retries", 1),
        ("grpc.service_config", SERVICE_CONFIG),
    ])
    methods = {
        kind: channel.unary_unary(f"/{SERVICE}/{name}",
                                  request_serializer=None, response_deserializer=None)
        for kind, name in (("deposit", "Deposit"), ("transfer", "Transfer"))
    }

    def pay(payment):
        request = encode(payment)
        for sent in range(1, ROUNDS + 1):
            try:
                reply = methods[payment["kind"]](request, timeout=5)
                return {"id": payment["id"], "ok": True, "sent": sent, **decode_receipt(reply)}
            except grpc.RpcError as error:
                if error.code() not in TRANSIENT:
                    break
        return {"id": payment["id"], "ok": False, "sent": sent,
                "code": error.code().value[0], "details": error.details()}

    payments = [json.loads(line) for line in sys.stdin if line.strip()]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for result in pool.map(pay, payments):
            print(json.dumps(result), flush=True)
    channel.close()


if __name__ == "__main__":
    main()
