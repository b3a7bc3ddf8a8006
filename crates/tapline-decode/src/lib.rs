//! Sans-I/O decoders shared by the proxy and the capture mode: pure functions over bytes,
//! no tokio, no clock (timestamps are passed in), never panicking on any input.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod defrag;
pub mod detect;
pub mod flow_decoder;
pub mod http;
pub mod http1;
pub mod packet;
pub mod pgsql;
pub mod reassembly;
mod transaction;

pub use detect::parse_decode_override;
pub use flow_decoder::{DecodeConfig, FlowDecoder};
