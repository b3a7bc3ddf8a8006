"""Rewrites every forward-proxy request: path to /echo?rewritten=yes&was=<old path>, and
sets the header X-Rewritten: yes. Responses get X-Plugin-Saw: <status>."""
import urllib.parse

import plugin_pb2
from plugin_common import Base, Caps, info, serve

ReqResp = plugin_pb2.ProcessHttpRequestResponse
RespResp = plugin_pb2.ProcessHttpResponseResponse


class Rewrite(Base):
    def GetPluginInfo(self, request, context):
        return info("RewritePlugin")

    def GetPluginCapabilities(self, request, context):
        return Caps(can_handle_http_forward=True)

    def ProcessHttpRequest(self, request, context):
        modified = plugin_pb2.HttpRequest()
        modified.CopyFrom(request.request)
        modified.path = "/echo?rewritten=yes&was=" + urllib.parse.quote(request.request.path, safe="")
        headers = [h for h in modified.headers if h.name.lower() != "x-rewritten"]
        headers.append(plugin_pb2.HttpHeader(name="X-Rewritten", value="yes"))
        del modified.headers[:]
        modified.headers.extend(headers)
        return ReqResp(action=ReqResp.Action.CONTINUE, modified_request=modified)

    def ProcessHttpResponse(self, request, context):
        modified = plugin_pb2.HttpResponse()
        modified.CopyFrom(request.response)
        modified.headers.append(plugin_pb2.HttpHeader(
            name="X-Plugin-Saw", value=str(request.response.status_code)))
        return RespResp(action=RespResp.Action.CONTINUE, modified_response=modified)


if __name__ == "__main__":
    serve(Rewrite())
