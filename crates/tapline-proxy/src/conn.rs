//! The byte streams a proxy connection is made of: plain TCP, or TLS that tapline
//! terminated (the client's leg) or opened (the upstream's), all over TCP.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The client's leg of an intercepted connection.
pub(crate) type ClientTls = tokio_rustls::server::TlsStream<TcpStream>;
/// An upstream leg tapline speaks TLS on.
pub(crate) type UpstreamTls = tokio_rustls::client::TlsStream<TcpStream>;

/// A connection's byte stream.
pub(crate) trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The socket underneath.
    fn socket(&self) -> &TcpStream;

    /// The socket, when the stream's bytes are the socket's own (no TLS on it): a relay
    /// may then move them inside the kernel.
    fn plain(&mut self) -> Option<&mut TcpStream>;
}

impl Conn for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }

    fn plain(&mut self) -> Option<&mut TcpStream> {
        Some(self)
    }
}

impl Conn for ClientTls {
    fn socket(&self) -> &TcpStream {
        self.get_ref().0
    }

    fn plain(&mut self) -> Option<&mut TcpStream> {
        None
    }
}

impl Conn for UpstreamTls {
    fn socket(&self) -> &TcpStream {
        self.get_ref().0
    }

    fn plain(&mut self) -> Option<&mut TcpStream> {
        None
    }
}
