"""A real gRPC server and client (grpcio) for tests/grpc.rs.

    grpc_peer.py server NAME [CERT KEY]
        Serves on 127.0.0.1 (a free port; TLS with CERT and KEY when given) and prints
        "listening PORT". With MAX_CONNECTION_AGE_MS in the environment, closes each
        connection (GOAWAY) after that long, as gRPC servers are set up to so that
        clients rebalance; with MAX_CONCURRENT_STREAMS, allows that many streams per
        connection. Methods (raw bytes, no protobuf compiler needed):
          /t.Echo/Echo    unary: answers b"NAME:" + request, trailing metadata x-served-by
          /t.Echo/Fail    unary: fails with NOT_FOUND, details "no such thing"
          /t.Echo/Count   server streaming: int(request) messages b"0", b"1", ...
          /t.Echo/Chat    bidirectional: each message answered upper-cased, as it comes
          /t.Echo/Hold    server streaming: one message b"NAME", then open until the
                          client cancels (at most 30 s), as a watch stream is
          /grpc.health.v1.Health/Check   unary: SERVING

    grpc_peer.py client ADDR CALLS [CA NAME]
        Calls each method through ADDR (TLS trusting CA, for server name NAME, when
        given) and prints one JSON object with what came back; Echo CALLS times.

    grpc_peer.py many ADDR CALLS
        CALLS Echo calls through ADDR, 8 at a time; prints {"STATUS": count, ...}.

    grpc_peer.py hold ADDR STREAMS
        Opens STREAMS Hold calls through ADDR, one channel, each after the last one's
        first message came; prints {"STATUS": count, ...} (the calls after one that
        got nothing within 5 s of the start count as "no first message in 5 s"), then
        cancels them.
"""

import collections
import json
import os
import queue
import sys
import time
from concurrent import futures

import grpc


def serve(name, cert=None, key=None):
    def echo(request, context):
        context.set_trailing_metadata((("x-served-by", name),))
        return name.encode() + b":" + request

    def fail(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    def count(request, context):
        for i in range(int(request)):
            yield str(i).encode()

    def chat(requests, context):
        for message in requests:
            yield message.upper()

    def hold(request, context):
        yield name.encode()
        until = time.monotonic() + 30
        while context.is_active() and time.monotonic() < until:
            time.sleep(0.05)

    def health(request, context):
        return b"\x08\x01"  # HealthCheckResponse { status: SERVING }

    ident = lambda b: b  # noqa: E731 (messages are raw bytes)
    handlers = [
        grpc.method_handlers_generic_handler(
            "t.Echo",
            {
                "Echo": grpc.unary_unary_rpc_method_handler(echo, ident, ident),
                "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
                "Count": grpc.unary_stream_rpc_method_handler(count, ident, ident),
                "Chat": grpc.stream_stream_rpc_method_handler(chat, ident, ident),
                "Hold": grpc.unary_stream_rpc_method_handler(hold, ident, ident),
            },
        ),
        grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health",
            {"Check": grpc.unary_unary_rpc_method_handler(health, ident, ident)},
        ),
    ]
    options = []
    if "MAX_CONNECTION_AGE_MS" in os.environ:
        options = [
            ("grpc.max_connection_age_ms", int(os.environ["MAX_CONNECTION_AGE_MS"])),
            ("grpc.max_connection_age_grace_ms", 5000),
        ]
    if "MAX_CONCURRENT_STREAMS" in os.environ:
        options.append(("grpc.max_concurrent_streams", int(os.environ["MAX_CONCURRENT_STREAMS"])))
    # A thread per call in progress: Hold calls keep theirs.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), options=options)
    server.add_generic_rpc_handlers(handlers)
    if cert:
        with open(cert, "rb") as c, open(key, "rb") as k:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    server.wait_for_termination()


def call(addr, calls, ca=None, name=None):
    if ca:
        with open(ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(addr, creds, (("grpc.ssl_target_name_override", name),))
    else:
        channel = grpc.insecure_channel(addr)
    out = {"echo": [], "trailers": []}
    echo = channel.unary_unary("/t.Echo/Echo")
    for i in range(calls):
        reply, state = echo.with_call(f"hi{i}".encode(), timeout=10)
        out["echo"].append(reply.decode())
        out["trailers"].append(dict(state.trailing_metadata()).get("x-served-by"))
    try:
        channel.unary_unary("/t.Echo/Fail")(b"", timeout=10)
        out["fail"] = ["OK", ""]
    except grpc.RpcError as e:
        out["fail"] = [e.code().name, e.details()]
    out["count"] = [m.decode() for m in channel.unary_stream("/t.Echo/Count")(b"5", timeout=10)]

    # Lockstep: the next message is sent only after the answer to the last one came
    # back, so this passes only if both directions stream through the proxy.
    answers = queue.Queue()
    words = ["one", "two", "three"]

    def requests():
        for word in words:
            yield word.encode()
            answers.get(timeout=10)

    out["chat"] = []
    for reply in channel.stream_stream("/t.Echo/Chat")(requests(), timeout=10):
        out["chat"].append(reply.decode())
        answers.put(reply)
    print(json.dumps(out), flush=True)


def many(addr, calls):
    echo = grpc.insecure_channel(addr).unary_unary("/t.Echo/Echo")

    def one(i):
        try:
            echo(b"x", timeout=10)
            return "OK"
        except grpc.RpcError as e:
            return f"{e.code().name}: {e.details()}"

    with futures.ThreadPoolExecutor(8) as pool:
        print(json.dumps(collections.Counter(pool.map(one, range(calls)))), flush=True)


def hold(addr, streams):
    channel = grpc.insecure_channel(addr)
    until = time.monotonic() + 5
    calls, outcomes = [], collections.Counter()
    with futures.ThreadPoolExecutor(1) as waiter:
        for _ in range(streams):
            call = channel.unary_stream("/t.Echo/Hold")(b"", timeout=20)
            calls.append(call)
            try:
                waiter.submit(next, call).result(timeout=max(0, until - time.monotonic()))
                outcomes["OK"] += 1
            except grpc.RpcError as e:
                outcomes[e.code().name] += 1
            except futures.TimeoutError:
                outcomes["no first message in 5 s"] = streams - sum(outcomes.values())
                break
        for call in calls:
            call.cancel()
    print(json.dumps(outcomes), flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "server":
        serve(*args)
    elif mode == "client":
        call(args[0], int(args[1]), *args[2:])
    elif mode == "many":
        many(args[0], int(args[1]))
    elif mode == "hold":
        hold(args[0], int(args[1]))
    else:
        sys.exit(f"unknown mode {mode!r}")
