"""Does nothing as fast as it can: CONTINUE without changes, pass-through with an empty
chunk. Forward proxy and tunnels, every protocol. For measuring per-call overhead."""
from plugin_common import Base, Caps, info, serve


class Noop(Base):
    def GetPluginInfo(self, request, context):
        return info("NoopPlugin")

    def GetPluginCapabilities(self, request, context):
        return Caps(can_handle_http_forward=True, can_handle_tunnel=True, protocols=[])


if __name__ == "__main__":
    serve(Noop())
