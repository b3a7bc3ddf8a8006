"""PostgreSQL plugin (lueur-guide style): no forward proxy, no tunnels, protocols=[POSTGRESQL].
Records every chunk (and the message types it parses from it) to argv[2]; passes it on."""
import struct

import plugin_pb2
from plugin_common import Base, Caps, Recorder, arg, info, serve


def message_types(data):
    """Type letters of the backend/frontend messages starting in `data` (best effort)."""
    types, offset = [], 0
    while offset + 5 <= len(data):
        kind = chr(data[offset])
        (length,) = struct.unpack_from(">i", data, offset + 1)
        if length < 4:
            break
        types.append(kind)
        offset += 1 + length
    return types


class Postgres(Base):
    def __init__(self, recorder):
        self.recorder = recorder

    def GetPluginInfo(self, request, context):
        return info("PostgreSQLPlugin")

    def GetPluginCapabilities(self, request, context):
        return Caps(can_handle_http_forward=False, can_handle_tunnel=False,
                    protocols=[Caps.SupportedProtocol.POSTGRESQL])

    def ProcessTunnelData(self, request, context):
        self.recorder.tunnel(request)
        self.recorder.write({"rpc": "parsed", "types": message_types(request.chunk)})
        return plugin_pb2.ProcessTunnelDataResponse(
            pass_through=plugin_pb2.PassThrough(chunk=request.chunk))


if __name__ == "__main__":
    serve(Postgres(Recorder(arg(2))))
