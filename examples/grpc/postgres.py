"""A PostgreSQL plugin for tapline (and lueur/fault): decodes the wire messages of sessions
routed through a `psql` mapping proxy and prints them, one line per message. Chunks are cut
wherever TCP cut them, so partial messages are kept per flow and direction until complete.

    python3 postgres.py [PORT]    (default 50052; listens on 127.0.0.1)
"""
import struct
import sys
import threading
import time
from concurrent import futures

import grpc

import plugin_pb2
import plugin_pb2_grpc

Caps = plugin_pb2.GetPluginCapabilitiesResponse
TunnelRequest = plugin_pb2.ProcessTunnelDataRequest

CLIENT_TYPES = {"Q": "Query", "P": "Parse", "B": "Bind", "E": "Execute", "D": "Describe",
                "S": "Sync", "X": "Terminate", "p": "PasswordMessage", "C": "Close",
                "H": "Flush", "d": "CopyData", "c": "CopyDone", "f": "CopyFail"}
SERVER_TYPES = {"R": "Authentication", "S": "ParameterStatus", "K": "BackendKeyData",
                "Z": "ReadyForQuery", "T": "RowDescription", "D": "DataRow",
                "C": "CommandComplete", "E": "ErrorResponse", "N": "NoticeResponse",
                "1": "ParseComplete", "2": "BindComplete", "3": "CloseComplete",
                "I": "EmptyQueryResponse", "n": "NoData", "s": "PortalSuspended",
                "t": "ParameterDescription", "A": "NotificationResponse"}


def cstrings(payload):
    return [s.decode("utf-8", "replace") for s in payload.split(b"\0")[:-1]]


def describe(kind, payload, from_client):
    """One readable line for a message."""
    if from_client and kind == "Q":
        return "Query: " + cstrings(payload)[0]
    if from_client and kind == "P":
        name, sql = cstrings(payload)[:2]
        return f"Parse {name or '(unnamed)'}: {sql}"
    if not from_client and kind == "T":
        (count,) = struct.unpack_from(">H", payload)
        names, offset = [], 2
        for _ in range(count):
            end = payload.index(b"\0", offset)
            names.append(payload[offset:end].decode("utf-8", "replace"))
            offset = end + 1 + 18
        return "RowDescription: " + ", ".join(names)
    if not from_client and kind == "D":
        (count,) = struct.unpack_from(">H", payload)
        values, offset = [], 2
        for _ in range(count):
            (length,) = struct.unpack_from(">i", payload, offset)
            offset += 4
            if length < 0:
                values.append(None)
            else:
                values.append(payload[offset:offset + length].decode("utf-8", "replace"))
                offset += length
        return f"DataRow: {values}"
    if not from_client and kind == "C":
        return "CommandComplete: " + cstrings(payload)[0]
    if not from_client and kind in "EN":
        fields = {f[:1]: f[1:] for f in cstrings(payload) if f}
        return f"{SERVER_TYPES[kind]}: {fields.get('S', '?')} {fields.get('C', '?')} {fields.get('M', '')}"
    names = CLIENT_TYPES if from_client else SERVER_TYPES
    return names.get(kind, f"message {kind!r}")


class Session:
    """One flow: the not yet complete bytes of each direction, and where the handshake is."""

    def __init__(self):
        self.pending = {True: b"", False: b""}  # keyed by "from the client"
        self.client_started = False  # the client's first messages have no type byte
        self.ssl_answer_due = False  # the server answers SSLRequest with one byte
        self.encrypted = False

    def feed(self, data, from_client):
        self.pending[from_client] += data
        lines = []
        while not self.encrypted:
            buf = self.pending[from_client]
            if from_client and not self.client_started:
                if len(buf) < 8:
                    break
                length, code = struct.unpack_from(">ii", buf)
                if len(buf) < length:
                    break
                lines.append({80877103: "SSLRequest", 80877104: "GSSENCRequest",
                              80877102: "CancelRequest"}.get(code, "StartupMessage"))
                self.pending[from_client] = buf[length:]
                self.ssl_answer_due = code in (80877103, 80877104)
                self.client_started = code == 196608  # protocol 3.0: typed messages follow
                continue
            if not from_client and self.ssl_answer_due:
                if not buf:
                    break
                self.ssl_answer_due = False
                self.pending[from_client] = buf[1:]
                if buf[:1] == b"N":
                    lines.append("encryption refused: plaintext goes on")
                else:
                    lines.append("encryption accepted: nothing more to decode")
                    self.encrypted = True
                continue
            if len(buf) < 5:
                break
            kind = chr(buf[0])
            (length,) = struct.unpack_from(">i", buf, 1)
            if length < 4:
                lines.append("(not PostgreSQL protocol: giving up on this direction)")
                self.pending[from_client] = b""
                break
            if len(buf) < 1 + length:
                break
            payload = buf[5:1 + length]
            self.pending[from_client] = buf[1 + length:]
            try:
                lines.append(describe(kind, payload, from_client))
            except (ValueError, struct.error, IndexError) as e:
                lines.append(f"{kind!r}: cannot decode ({e})")
        if self.encrypted:
            self.pending = {True: b"", False: b""}
        return lines


class PostgresPlugin(plugin_pb2_grpc.PluginServiceServicer):
    def __init__(self):
        self.sessions = {}
        self.lock = threading.Lock()

    def HealthCheck(self, request, context):
        return plugin_pb2.HealthCheckResponse(healthy=True)

    def GetPluginInfo(self, request, context):
        # Side CLIENT (the default): client->server bytes arrive as INGRESS.
        return plugin_pb2.GetPluginInfoResponse(
            name="postgres", version="1.0.0", author="tapline examples",
            url="https://example.invalid/tapline/examples/grpc", platform="python")

    def GetPluginCapabilities(self, request, context):
        return Caps(can_handle_http_forward=False, can_handle_tunnel=False,
                    protocols=[Caps.SupportedProtocol.POSTGRESQL])

    def ProcessTunnelData(self, request, context):
        from_client = request.direction == TunnelRequest.Direction.INGRESS
        with self.lock:
            session = self.sessions.setdefault(request.id, Session())
            lines = session.feed(request.chunk, from_client)
        who = "client" if from_client else "server"
        for line in lines:
            print(f"flow {request.id} {who}: {line}", flush=True)
        return plugin_pb2.ProcessTunnelDataResponse(pass_through=plugin_pb2.PassThrough())


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 50052
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    plugin_pb2_grpc.add_PluginServiceServicer_to_server(PostgresPlugin(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"postgres plugin listening on 127.0.0.1:{port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    main()
