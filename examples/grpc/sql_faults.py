"""A message plugin for tapline (tapline's gRPC extension, not in lueur/fault): it asks for
decoded PostgreSQL messages (`can_handle_messages`) and answers the statements whose SQL
matches a pattern with an error, which tapline sends to the client in place of the server's
answer; the statement never reaches the server. Executions of prepared statements (`Bind`)
match by the SQL they were prepared from. Every other message passes.

    python3 sql_faults.py [PORT] [PATTERN] [SQLSTATE]
        (defaults: 50053, '^\\s*update\\s+orders', 40001; listens on 127.0.0.1)
    tapline proxy --disable-http-proxy --proxy 6432=psql://127.0.0.1:5432 \\
        --grpc-plugin http://127.0.0.1:50053
"""
import json
import re
import sys
from concurrent import futures

import grpc

import plugin_pb2
import plugin_pb2_grpc

Sender = plugin_pb2.ProcessMessageRequest.Sender


class SqlFaults(plugin_pb2_grpc.PluginServiceServicer):
    def __init__(self, pattern, code):
        self.pattern = re.compile(pattern, re.IGNORECASE)
        self.code = code
        self.injected = 0

    def HealthCheck(self, request, context):
        return plugin_pb2.HealthCheckResponse(healthy=True, message="ok")

    def GetPluginInfo(self, request, context):
        return plugin_pb2.GetPluginInfoResponse(
            name="sql-faults", version="1.0", author="tapline", platform="python")

    def GetPluginCapabilities(self, request, context):
        # No HTTP, no tunnel bytes: only decoded messages.
        return plugin_pb2.GetPluginCapabilitiesResponse(can_handle_messages=True)

    def ProcessMessage(self, request, context):
        if request.sender == Sender.CLIENT and request.type in ("Query", "Bind"):
            sql = json.loads(request.fields_json or "{}").get("sql") or ""
            if self.pattern.search(sql):
                self.injected += 1
                print(f"injecting {self.code} #{self.injected} into flow {request.id}: {sql}",
                      flush=True)
                return plugin_pb2.ProcessMessageResponse(pg_error=plugin_pb2.PgError(
                    code=self.code, message=f"rehearsed failure {self.code} (sql-faults plugin)"))
        return plugin_pb2.ProcessMessageResponse(pass_through=plugin_pb2.Pass())


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 50053
    pattern = sys.argv[2] if len(sys.argv) > 2 else r"^\s*update\s+orders"
    code = sys.argv[3] if len(sys.argv) > 3 else "40001"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    plugin_pb2_grpc.add_PluginServiceServicer_to_server(SqlFaults(pattern, code), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"sql-faults plugin on 127.0.0.1:{port}, failing /{pattern}/ with {code}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
