"""Answers every forward-proxy request itself with 418 I'm a teapot (ABORT)."""
import plugin_pb2
from plugin_common import Base, Caps, info, serve

Resp = plugin_pb2.ProcessHttpRequestResponse


class Abort(Base):
    def GetPluginInfo(self, request, context):
        return info("AbortPlugin")

    def GetPluginCapabilities(self, request, context):
        return Caps(can_handle_http_forward=True)

    def ProcessHttpRequest(self, request, context):
        return Resp(action=Resp.Action.ABORT, abort_response=plugin_pb2.HttpResponse(
            status_code=418,
            headers=[plugin_pb2.HttpHeader(name="X-Aborted-By", value="abort_plugin"),
                     plugin_pb2.HttpHeader(name="Content-Type", value="text/plain")],
            body=b"short and stout\n"))


if __name__ == "__main__":
    serve(Abort())
