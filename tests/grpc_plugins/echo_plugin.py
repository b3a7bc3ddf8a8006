"""Echo plugin (lueur-guide style, answering in the protocol's real shape): forward proxy and
tunnels, every protocol; records every call as JSON lines to argv[2] and passes it on."""
import plugin_pb2
from plugin_common import Base, Caps, Recorder, arg, info, serve


class Echo(Base):
    def __init__(self, recorder):
        self.recorder = recorder

    def GetPluginInfo(self, request, context):
        return info("EchoPlugin")

    def GetPluginCapabilities(self, request, context):
        return Caps(can_handle_http_forward=True, can_handle_tunnel=True, protocols=[])

    def ProcessHttpRequest(self, request, context):
        self.recorder.http_request(request.request)
        return plugin_pb2.ProcessHttpRequestResponse(
            action=plugin_pb2.ProcessHttpRequestResponse.Action.CONTINUE,
            modified_request=request.request)

    def ProcessHttpResponse(self, request, context):
        self.recorder.http_response(request.response)
        return plugin_pb2.ProcessHttpResponseResponse(
            action=plugin_pb2.ProcessHttpResponseResponse.Action.CONTINUE,
            modified_response=request.response)

    def ProcessTunnelData(self, request, context):
        self.recorder.tunnel(request)
        return plugin_pb2.ProcessTunnelDataResponse(
            pass_through=plugin_pb2.PassThrough(chunk=request.chunk))


if __name__ == "__main__":
    serve(Echo(Recorder(arg(2))))
