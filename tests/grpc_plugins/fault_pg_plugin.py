"""PostgreSQL plugin written as fault's own example is: it keys its per-connection state by
`uuid.UUID(request.id)`, which raises on anything but a UUID (tapline used to send "1", "2",
…). Records each chunk with the parsed id, its direction and its length to argv[2]; a chunk
whose id does not parse is recorded as an error and closes nothing (the plugin passes it on).
"""
import uuid

import plugin_pb2
from plugin_common import Base, Caps, Recorder, TunnelReq, arg, info, serve


class FaultStylePostgres(Base):
    def __init__(self, recorder):
        self.recorder = recorder
        self.sessions = {}

    def GetPluginInfo(self, request, context):
        return info("FaultStylePostgreSQLPlugin")

    def GetPluginCapabilities(self, request, context):
        return Caps(can_handle_http_forward=False, can_handle_tunnel=False,
                    protocols=[Caps.SupportedProtocol.POSTGRESQL])

    def ProcessTunnelData(self, request, context):
        try:
            session = uuid.UUID(request.id)
        except ValueError as e:
            self.recorder.write({"rpc": "error", "id": request.id, "error": str(e)})
        else:
            seen = self.sessions.setdefault(session, 0) + 1
            self.sessions[session] = seen
            self.recorder.write({
                "rpc": "chunk", "session": str(session), "version": session.version,
                "nth": seen, "direction": TunnelReq.Direction.Name(request.direction),
                "len": len(request.chunk),
            })
        return plugin_pb2.ProcessTunnelDataResponse(
            pass_through=plugin_pb2.PassThrough(chunk=request.chunk))


if __name__ == "__main__":
    serve(FaultStylePostgres(Recorder(arg(2))))
