"""Acts on tunnel and mapping bytes (can_handle_tunnel, every protocol). argv[2] is the mode:
  replace  client->server bytes upper-cased (Replace)
  close    Close with reason "tunnel_plugin says bye" on the first client->server chunk
  buffer   Buffer each odd client->server chunk of a flow, release it with the next one
           (PassThrough carrying both)
Server->client bytes always pass through. Calls are recorded to argv[3] when given."""
import threading

import plugin_pb2
from plugin_common import Base, Caps, Recorder, TunnelReq, arg, info, serve

Resp = plugin_pb2.ProcessTunnelDataResponse


class Tunnel(Base):
    def __init__(self, mode, recorder):
        self.mode = mode
        self.recorder = recorder
        self.held = {}
        self.lock = threading.Lock()

    def GetPluginInfo(self, request, context):
        return info("TunnelPlugin-" + self.mode)

    def GetPluginCapabilities(self, request, context):
        return Caps(can_handle_tunnel=True, protocols=[])

    def ProcessTunnelData(self, request, context):
        self.recorder.tunnel(request)
        # Declared side CLIENT: client->server bytes are INGRESS.
        if request.direction != TunnelReq.Direction.INGRESS:
            return Resp(pass_through=plugin_pb2.PassThrough(chunk=request.chunk))
        if self.mode == "replace":
            return Resp(replace=plugin_pb2.Replace(modified_chunk=request.chunk.upper()))
        if self.mode == "close":
            return Resp(close=plugin_pb2.Close(reason="tunnel_plugin says bye"))
        with self.lock:
            held = self.held.pop(request.id, None)
            if held is None:
                self.held[request.id] = request.chunk
                return Resp(buffer=plugin_pb2.Buffer(estimated_time_to_release_ms=1000))
        return Resp(pass_through=plugin_pb2.PassThrough(chunk=held + request.chunk))


if __name__ == "__main__":
    serve(Tunnel(arg(2, "replace"), Recorder(arg(3))))
