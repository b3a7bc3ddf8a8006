"""An echo plugin written the way lueur's plugin guide writes it, unchanged in behaviour:
info without side/direction, forward + tunnel capabilities, requests and responses echoed
back as modified_*, printed to stdout. Its ProcessTunnelData answers with an `Action` enum and
a `modified_chunk` field that ProcessTunnelDataResponse does not have, so that call raises on
the plugin side (gRPC status UNKNOWN): the proxy must fail open around it."""
import sys
import time
from concurrent import futures

import grpc

import plugin_pb2
import plugin_pb2_grpc


class EchoPlugin(plugin_pb2_grpc.PluginServiceServicer):
    def HealthCheck(self, request, context):
        return plugin_pb2.HealthCheckResponse(healthy=True, message="")

    def GetPluginInfo(self, request, context):
        return plugin_pb2.GetPluginInfoResponse(
            name="EchoPlugin", version="1.0.0", author="Jane Doe",
            url="https://example.invalid/echoplugin", platform="python")

    def GetPluginCapabilities(self, request, context):
        return plugin_pb2.GetPluginCapabilitiesResponse(
            can_handle_http_forward=True, can_handle_tunnel=True, protocols=[])

    def ProcessHttpRequest(self, request, context):
        print("request", request.request.method, request.request.path, flush=True)
        return plugin_pb2.ProcessHttpRequestResponse(
            action=plugin_pb2.ProcessHttpRequestResponse.Action.CONTINUE,
            modified_request=request.request)

    def ProcessHttpResponse(self, request, context):
        print("response", request.response.status_code, flush=True)
        return plugin_pb2.ProcessHttpResponseResponse(
            action=plugin_pb2.ProcessHttpResponseResponse.Action.CONTINUE,
            modified_response=request.response)

    def ProcessTunnelData(self, request, context):
        print("tunnel", len(request.chunk), flush=True)
        # As in the guide: neither `Action` nor `modified_chunk` exists in the protocol.
        return plugin_pb2.ProcessTunnelDataResponse(
            action=plugin_pb2.ProcessTunnelDataResponse.Action.PASS_THROUGH,
            modified_chunk=request.chunk)


def serve():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    plugin_pb2_grpc.add_PluginServiceServicer_to_server(EchoPlugin(), server)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 50051
    server.add_insecure_port(f"[::]:{port}")
    server.start()
    print(f"Plugin gRPC server is running on port {port}...", flush=True)
    try:
        while True:
            time.sleep(86400)
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    serve()
