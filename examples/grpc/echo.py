"""An echo plugin for tapline (and lueur/fault): prints every forward-proxy request and
response and every tunnel chunk it is sent, and lets everything through unchanged.

    python3 echo.py [PORT]        (default 50051; listens on 127.0.0.1)
"""
import sys
import time
from concurrent import futures

import grpc

import plugin_pb2
import plugin_pb2_grpc

TunnelRequest = plugin_pb2.ProcessTunnelDataRequest


class EchoPlugin(plugin_pb2_grpc.PluginServiceServicer):
    def HealthCheck(self, request, context):
        return plugin_pb2.HealthCheckResponse(healthy=True)

    def GetPluginInfo(self, request, context):
        return plugin_pb2.GetPluginInfoResponse(
            name="echo", version="1.0.0", author="tapline examples",
            url="https://example.invalid/tapline/examples/grpc", platform="python")

    def GetPluginCapabilities(self, request, context):
        # HTTP from the forward proxy, CONNECT tunnels, and (no protocol named) the bytes
        # of every mapping proxy.
        return plugin_pb2.GetPluginCapabilitiesResponse(
            can_handle_http_forward=True, can_handle_tunnel=True, protocols=[])

    def ProcessHttpRequest(self, request, context):
        req = request.request
        host = next((h.value for h in req.headers if h.name.lower() == "host"), "?")
        print(f"request  {req.method} {host}{req.path} ({len(req.body)} body bytes)", flush=True)
        # CONTINUE without modified_request: the request goes on unchanged.
        return plugin_pb2.ProcessHttpRequestResponse(
            action=plugin_pb2.ProcessHttpRequestResponse.Action.CONTINUE)

    def ProcessHttpResponse(self, request, context):
        resp = request.response
        print(f"response {resp.status_code} ({len(resp.body)} body bytes)", flush=True)
        return plugin_pb2.ProcessHttpResponseResponse(
            action=plugin_pb2.ProcessHttpResponseResponse.Action.CONTINUE)

    def ProcessTunnelData(self, request, context):
        way = TunnelRequest.Direction.Name(request.direction).lower()
        print(f"tunnel   flow {request.id} {way} {len(request.chunk)} bytes: "
              f"{request.chunk[:32]!r}", flush=True)
        # An empty pass_through forwards the original chunk.
        return plugin_pb2.ProcessTunnelDataResponse(pass_through=plugin_pb2.PassThrough())


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 50051
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    plugin_pb2_grpc.add_PluginServiceServicer_to_server(EchoPlugin(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"echo plugin listening on 127.0.0.1:{port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    main()
