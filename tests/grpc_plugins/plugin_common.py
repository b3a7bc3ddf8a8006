"""Shared pieces of tapline's test plugins: serving on a port, recording calls as JSON lines.

Every test plugin takes its port as argv[1]; plugins that record take the record file as
argv[2]. Stubs (plugin_pb2*.py) are generated next to these files by the test harness.
"""
import json
import sys
import threading
import time
from concurrent import futures

import grpc

import plugin_pb2
import plugin_pb2_grpc

Caps = plugin_pb2.GetPluginCapabilitiesResponse
Info = plugin_pb2.GetPluginInfoResponse
TunnelReq = plugin_pb2.ProcessTunnelDataRequest


def info(name, side=Info.Side.CLIENT, direction=Info.Direction.BOTH):
    return Info(name=name, version="0.1.0", author="tapline tests",
                url="https://example.invalid/" + name, platform="python",
                side=side, direction=direction)


def headers_of(message):
    return [[h.name, h.value] for h in message.headers]


class Recorder:
    """Appends one JSON object per call to a file (thread-safe, flushed each time)."""

    def __init__(self, path):
        self._file = open(path, "a", encoding="utf-8") if path else None
        self._lock = threading.Lock()

    def http_request(self, request):
        self.write({"rpc": "ProcessHttpRequest", "method": request.method,
                    "path": request.path, "headers": headers_of(request),
                    "body": request.body.decode("latin-1")})

    def http_response(self, response):
        self.write({"rpc": "ProcessHttpResponse", "status": response.status_code,
                    "headers": headers_of(response),
                    "body": response.body.decode("latin-1")})

    def tunnel(self, request):
        self.write({"rpc": "ProcessTunnelData", "id": request.id,
                    "side": TunnelReq.Side.Name(request.side),
                    "direction": TunnelReq.Direction.Name(request.direction),
                    "chunk": request.chunk.decode("latin-1")})

    def write(self, entry):
        if self._file is None:
            return
        with self._lock:
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()


def serve(servicer, port=None):
    """Serves `servicer` on 127.0.0.1:PORT (argv[1]) until killed."""
    port = port or int(sys.argv[1])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    plugin_pb2_grpc.add_PluginServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"plugin listening on 127.0.0.1:{port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop(0)


def arg(index, default=None):
    return sys.argv[index] if len(sys.argv) > index else default


class Base(plugin_pb2_grpc.PluginServiceServicer):
    """Healthy, passes everything on unchanged; subclasses override what they test."""

    def HealthCheck(self, request, context):
        return plugin_pb2.HealthCheckResponse(healthy=True, message="")

    def ProcessHttpRequest(self, request, context):
        return plugin_pb2.ProcessHttpRequestResponse(
            action=plugin_pb2.ProcessHttpRequestResponse.Action.CONTINUE)

    def ProcessHttpResponse(self, request, context):
        return plugin_pb2.ProcessHttpResponseResponse(
            action=plugin_pb2.ProcessHttpResponseResponse.Action.CONTINUE)

    def ProcessTunnelData(self, request, context):
        return plugin_pb2.ProcessTunnelDataResponse(
            pass_through=plugin_pb2.PassThrough(chunk=b""))
