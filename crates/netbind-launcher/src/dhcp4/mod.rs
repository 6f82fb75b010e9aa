//! DHCPv4: the wire codec (pure) and the answer logic (pure); the socket loop is in `serve`.
pub mod codec;
pub mod server;
