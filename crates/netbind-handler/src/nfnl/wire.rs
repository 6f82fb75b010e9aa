//! Netlink framing for nfnetlink batches: message headers, attributes and nests, written into
//! one buffer that is sent with a single `send` (the kernel runs a batch only when it arrives
//! in one piece).

/// `NLM_F_REQUEST`, `NLM_F_ACK`, `NLM_F_CREATE`, `NLM_F_APPEND` (uapi `linux/netlink.h`).
pub const F_REQUEST: u16 = 0x1;
pub const F_ACK: u16 = 0x4;
pub const F_CREATE: u16 = 0x400;
pub const F_APPEND: u16 = 0x800;
/// `NLA_F_NESTED`: set on nests, as libmnl does.
const NLA_F_NESTED: u16 = 0x8000;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLA_HDRLEN: usize = 4;

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// A batch being written.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

/// An open message: where it starts, to write its length when it is closed.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct OpenMessage(usize);

/// An open nest, likewise.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct OpenNest(usize);

impl Writer {
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Opens a message: the netlink header and nfnetlink's `nfgenmsg` (family, version 0,
    /// resource id).
    pub fn message(
        &mut self,
        kind: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
    ) -> OpenMessage {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, written by `end`
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        debug_assert_eq!(self.buf.len() - start, NLMSG_HDRLEN + NFGENMSG_LEN);
        OpenMessage(start)
    }

    pub fn end(&mut self, open: OpenMessage) {
        let len = u32::try_from(self.buf.len() - open.0).unwrap_or(u32::MAX);
        self.buf[open.0..open.0 + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn nest(&mut self, kind: u16) -> OpenNest {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        OpenNest(start)
    }

    /// A nest longer than 64 KiB cannot be described; its length is clamped and the kernel
    /// refuses the message (netbind's rules are a few hundred bytes).
    pub fn end_nest(&mut self, open: OpenNest) {
        let len = u16::try_from(self.buf.len() - open.0).unwrap_or(u16::MAX);
        self.buf[open.0..open.0 + 2].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = NLA_HDRLEN + data.len();
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len() + align(len) - len, 0);
    }

    /// A NUL-terminated string.
    pub fn str(&mut self, kind: u16, value: &str) {
        let mut data = Vec::with_capacity(value.len() + 1);
        data.extend_from_slice(value.as_bytes());
        data.push(0);
        self.attr(kind, &data);
    }

    /// A big-endian u32, as nf_tables takes every number.
    pub fn u32(&mut self, kind: u16, value: u32) {
        self.attr(kind, &value.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;

    #[test]
    fn messages_and_nests_carry_their_lengths_and_attributes_are_padded() {
        let mut w = Writer::default();
        let msg = w.message(0x0a00, F_REQUEST | F_ACK, 7, 2, 0);
        w.str(1, "nat"); // 4 + 4 bytes
        let nest = w.nest(4);
        w.u32(1, 4);
        w.end_nest(nest);
        w.end(msg);
        let bytes = w.into_bytes();
        assert_eq!(bytes.len(), 20 + 8 + 4 + 8);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 40);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
        assert_eq!(&bytes[20..28], &[8, 0, 1, 0, b'n', b'a', b't', 0]);
        assert_eq!(&bytes[28..32], &[12, 0, 4, 0x80]);
        assert_eq!(&bytes[32..40], &[8, 0, 1, 0, 0, 0, 0, 4]);
    }
}
