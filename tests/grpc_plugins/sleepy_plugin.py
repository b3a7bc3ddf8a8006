"""Healthy, but every Process* call sleeps argv[2] seconds (default 5) before passing:
past any sensible --plugin-timeout. Forward proxy and tunnels, every protocol."""
import time

from plugin_common import Base, Caps, arg, info, serve


class Sleepy(Base):
    def __init__(self, seconds):
        self.seconds = seconds

    def GetPluginInfo(self, request, context):
        return info("SleepyPlugin")

    def GetPluginCapabilities(self, request, context):
        return Caps(can_handle_http_forward=True, can_handle_tunnel=True, protocols=[])

    def ProcessHttpRequest(self, request, context):
        time.sleep(self.seconds)
        return super().ProcessHttpRequest(request, context)

    def ProcessHttpResponse(self, request, context):
        time.sleep(self.seconds)
        return super().ProcessHttpResponse(request, context)

    def ProcessTunnelData(self, request, context):
        time.sleep(self.seconds)
        return super().ProcessTunnelData(request, context)


if __name__ == "__main__":
    serve(Sleepy(float(arg(2, "5"))))
