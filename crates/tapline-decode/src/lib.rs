//! Sans-I/O decoders shared by the proxy and the capture mode: pure functions over bytes,
//! no tokio, no clock (timestamps are passed in), never panicking on any input.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod flow_decoder;
pub mod packet;
pub mod reassembly;

pub use flow_decoder::{DecodeConfig, FlowDecoder};
