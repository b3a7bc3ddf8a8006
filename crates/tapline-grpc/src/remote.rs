//! One plugin address and its channel: every rpc, bounded by the call timeout.

use std::future::Future;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::address;
use crate::description::PluginDescription;
use crate::error::GrpcError;
use crate::proto::plugin_service_client::PluginServiceClient;
use crate::proto::{
    GetPluginCapabilitiesRequest, GetPluginInfoRequest, HealthCheckRequest, HealthCheckResponse,
    HttpRequest, HttpResponse, ProcessHttpRequestRequest, ProcessHttpRequestResponse,
    ProcessHttpResponseRequest, ProcessHttpResponseResponse, ProcessMessageRequest,
    ProcessMessageResponse, ProcessTunnelDataRequest, ProcessTunnelDataResponse,
};

/// A plugin's address and a channel to it. Cloning shares the channel (one HTTP/2
/// connection, reconnected on demand, carrying concurrent calls).
#[derive(Clone)]
pub(crate) struct Remote {
    address: String,
    client: PluginServiceClient<Channel>,
    timeout: Duration,
}

impl Remote {
    /// A channel that connects on first use and reconnects after the plugin went away.
    /// Fails only for a bad address.
    pub(crate) fn lazy(url: &str, timeout: Duration) -> Result<Remote, GrpcError> {
        let endpoint = endpoint(url, timeout)?;
        Ok(Remote::new(url, endpoint.connect_lazy(), timeout))
    }

    /// A channel connected now (for a one-off probe).
    pub(crate) async fn connected(url: &str, timeout: Duration) -> Result<Remote, GrpcError> {
        let endpoint = endpoint(url, timeout)?;
        let unreachable = |source| GrpcError::Unreachable {
            url: url.to_string(),
            source,
        };
        let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
            Ok(connected) => connected.map_err(unreachable)?,
            Err(_) => {
                return Err(GrpcError::Timeout {
                    rpc: "connect",
                    after: timeout,
                })
            }
        };
        Ok(Remote::new(url, channel, timeout))
    }

    fn new(url: &str, channel: Channel, timeout: Duration) -> Remote {
        Remote {
            address: url.to_string(),
            client: PluginServiceClient::new(channel),
            timeout,
        }
    }

    /// The address as given.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// `HealthCheck`.
    pub(crate) async fn health(&self) -> Result<HealthCheckResponse, GrpcError> {
        let mut client = self.client.clone();
        self.bounded("HealthCheck", client.health_check(HealthCheckRequest {}))
            .await
    }

    /// `GetPluginInfo` then `GetPluginCapabilities`.
    pub(crate) async fn describe(&self) -> Result<PluginDescription, GrpcError> {
        let mut client = self.client.clone();
        let info = self
            .bounded(
                "GetPluginInfo",
                client.get_plugin_info(GetPluginInfoRequest {}),
            )
            .await?;
        let capabilities = self
            .bounded(
                "GetPluginCapabilities",
                client.get_plugin_capabilities(GetPluginCapabilitiesRequest {}),
            )
            .await?;
        Ok(PluginDescription::from_answers(
            &self.address,
            info,
            capabilities,
        ))
    }

    /// `ProcessHttpRequest`.
    pub(crate) async fn http_request(
        &self,
        request: HttpRequest,
    ) -> Result<ProcessHttpRequestResponse, GrpcError> {
        let mut client = self.client.clone();
        let message = ProcessHttpRequestRequest {
            request: Some(request),
        };
        self.bounded("ProcessHttpRequest", client.process_http_request(message))
            .await
    }

    /// `ProcessHttpResponse`.
    pub(crate) async fn http_response(
        &self,
        response: HttpResponse,
    ) -> Result<ProcessHttpResponseResponse, GrpcError> {
        let mut client = self.client.clone();
        let message = ProcessHttpResponseRequest {
            response: Some(response),
        };
        self.bounded("ProcessHttpResponse", client.process_http_response(message))
            .await
    }

    /// `ProcessTunnelData`.
    pub(crate) async fn tunnel_data(
        &self,
        message: ProcessTunnelDataRequest,
    ) -> Result<ProcessTunnelDataResponse, GrpcError> {
        let mut client = self.client.clone();
        self.bounded("ProcessTunnelData", client.process_tunnel_data(message))
            .await
    }

    /// `ProcessMessage` (tapline's extension).
    pub(crate) async fn message(
        &self,
        message: ProcessMessageRequest,
    ) -> Result<ProcessMessageResponse, GrpcError> {
        let mut client = self.client.clone();
        self.bounded("ProcessMessage", client.process_message(message))
            .await
    }

    async fn bounded<T>(
        &self,
        rpc: &'static str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, GrpcError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(GrpcError::Status {
                rpc,
                status: Box::new(status),
            }),
            Err(_) => Err(GrpcError::Timeout {
                rpc,
                after: self.timeout,
            }),
        }
    }
}

fn endpoint(url: &str, timeout: Duration) -> Result<Endpoint, GrpcError> {
    let uri = address::parse(url)?;
    Ok(Endpoint::from(uri)
        .connect_timeout(timeout)
        .tcp_nodelay(true))
}

/// Connects to the plugin at `url` and fetches its description (`GetPluginInfo`, then
/// `GetPluginCapabilities`), each step bounded by `timeout`. For `tapline plugins check`.
pub async fn probe(url: &str, timeout: Duration) -> Result<PluginDescription, GrpcError> {
    Remote::connected(url, timeout).await?.describe().await
}
