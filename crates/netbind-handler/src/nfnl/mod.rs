//! nftables over nfnetlink from this process: a ruleset is lowered to nf_tables messages
//! (`lower`), framed as one batch (`wire`) and sent on a `NETLINK_NETFILTER` socket opened in
//! the calling thread's network namespace. The kernel applies the batch as one transaction:
//! every message or none. Each message asks for an acknowledgement, so a refusal is reported
//! against the table, chain or rule it concerns, with the kernel's error.
//!
//! This is what `nft -f` does after parsing, without starting a process, loading libnftables
//! or reading the kernel's ruleset into a cache first.

pub mod lower;
mod release;
mod wire;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::time::Duration;

use netbind_plan::nft::Family;
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

pub use lower::{Batch, LowerError, Op, batch};

/// How long to wait for the kernel's answer before giving up (it answers in microseconds; a
/// wait this long means something is wrong, and a transaction must not hang its caller).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    #[error("open a netfilter netlink socket: {0}")]
    Socket(io::Error),
    #[error("send the batch ({bytes} bytes): {source}")]
    Send { bytes: usize, source: io::Error },
    #[error("read the kernel's answer: {0}")]
    Receive(io::Error),
    #[error("the kernel did not answer within {0:?}")]
    Timeout(Duration),
    #[error(
        "the kernel's answers overflowed the socket's buffer: whether the transaction applied \
         is unknown"
    )]
    AnswersLost,
    #[error("{op}: {message}")]
    Refused { op: String, message: String },
}

/// Sends `batch` and waits until the kernel has answered every message in it.
pub fn apply(batch: &Batch) -> Result<(), TransactionError> {
    let socket = open(batch.bytes.len(), batch.ops.len())?;
    // Unconnected and unaddressed, a netlink datagram goes to the kernel.
    let sent = socket
        .send(&batch.bytes, 0)
        .map_err(|source| TransactionError::Send {
            bytes: batch.bytes.len(),
            source,
        })?;
    if sent != batch.bytes.len() {
        return Err(TransactionError::Send {
            bytes: batch.bytes.len(),
            source: io::Error::new(io::ErrorKind::WriteZero, format!("{sent} bytes sent")),
        });
    }
    // One flag per acknowledged message: a batch of thousands of rules gets thousands of
    // answers, each found by its sequence number in constant time.
    let mut answered = vec![false; batch.ops.len()];
    let mut pending = batch.ops.len();
    let mut refused: Vec<(u32, i32, Option<String>)> = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    while pending > 0 {
        let got = receive(&socket, &mut buf)?;
        for answer in answers(&buf[..got]) {
            match batch.index(answer.seq) {
                Some(at) if !answered[at] => {
                    answered[at] = true;
                    pending -= 1;
                }
                Some(_) => {}
                // The kernel refused the batch as a whole: no per-message answers follow.
                None if answer.errno != 0 => pending = 0,
                None => {}
            }
            if answer.errno != 0 {
                refused.push((answer.seq, answer.errno, answer.message));
            }
        }
    }
    // The first refusal in the batch's order is the cause; later ones may only follow from it.
    match refused.into_iter().min_by_key(|(seq, ..)| *seq) {
        None => {
            // What the transaction deleted or replaced is freed after a grace period, and the
            // socket's release would wait for it.
            if batch.destroys {
                // SAFETY: into_raw_fd gives the descriptor up; nothing else owns it.
                release::release_off_path(unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) });
            }
            Ok(())
        }
        Some((seq, errno, message)) => {
            let mut text = io::Error::from_raw_os_error(errno).to_string();
            if let Some(message) = message {
                text = format!("{text}: {message}");
            }
            Err(TransactionError::Refused {
                op: batch
                    .op(seq)
                    .map_or_else(|| "the batch".to_string(), str::to_string),
                message: text,
            })
        }
    }
}

/// Whether table `name` of `family` exists in the calling thread's namespace: one
/// `NFT_MSG_GETTABLE` for it, answered with the table and an acknowledgement, or with ENOENT.
/// (A read needs CAP_NET_ADMIN in the namespace, like any nf_tables request.)
pub fn table_exists(family: Family, name: &str) -> Result<bool, TransactionError> {
    const SEQ: u32 = 1;
    const NFTA_TABLE_NAME: u16 = 1;
    let mut w = wire::Writer::default();
    let msg = w.message(
        lower::GETTABLE,
        wire::F_REQUEST | wire::F_ACK,
        SEQ,
        lower::family_number(family),
        0,
    );
    w.str(NFTA_TABLE_NAME, name);
    w.end(msg);
    let request = w.into_bytes();
    let socket = open(request.len(), 2)?;
    socket
        .send(&request, 0)
        .map_err(|source| TransactionError::Send {
            bytes: request.len(),
            source,
        })?;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let got = receive(&socket, &mut buf)?;
        // The table's own message comes first and is skipped; the acknowledgement decides.
        if let Some(answer) = answers(&buf[..got]).into_iter().find(|a| a.seq == SEQ) {
            return match answer.errno {
                0 => Ok(true),
                libc::ENOENT => Ok(false),
                errno => Err(TransactionError::Refused {
                    op: format!("read table {} {name}", family.as_str()),
                    message: io::Error::from_raw_os_error(errno).to_string(),
                }),
            };
        }
    }
}

/// One datagram of the kernel's answers into `buf` (cleared first): its length. An
/// interrupted wait is resumed; the socket's receive timeout and a full buffer are errors.
fn receive(socket: &Socket, buf: &mut Vec<u8>) -> Result<usize, TransactionError> {
    loop {
        buf.clear();
        match socket.recv(buf, 0) {
            Ok(got) => return Ok(got.min(buf.len())),
            Err(err) => match err.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => return Err(TransactionError::Timeout(ANSWER_TIMEOUT)),
                _ if err.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(TransactionError::AnswersLost);
                }
                _ => return Err(TransactionError::Receive(err)),
            },
        }
    }
}

/// An integer socket option, best effort (the caller copes without it).
fn set_int(fd: libc::c_int, option: libc::c_int, value: usize) {
    let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt with a pointer to a live c_int of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&raw const value).cast(),
            socklen::<libc::c_int>(),
        );
    }
}

fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

/// The socket buffers' default size (`net.core.{r,w}mem_default` here); a batch or its answers
/// beyond it get buffers of their own size.
const DEFAULT_BUFFER: usize = 212_992;
/// What one answer costs in the receive buffer (a small skb's true size, rounded up).
const ANSWER_COST: usize = 1024;

/// A socket for a batch of `bytes` bytes and `answers` acknowledged messages.
fn open(bytes: usize, answers: usize) -> Result<Socket, TransactionError> {
    let socket = Socket::new(NETLINK_NETFILTER).map_err(TransactionError::Socket)?;
    let fd = socket.as_raw_fd();
    // The kernel takes a batch only in one message, and drops answers that do not fit the
    // receive buffer: size both for a large ruleset (many ports), as nft does (the FORCE
    // options, as root, pass the system's maximum). Best effort: without them a batch too
    // large fails with EMSGSIZE, and lost answers are reported.
    let sizes = [
        (libc::SO_SNDBUFFORCE, bytes + 4096),
        (libc::SO_RCVBUFFORCE, answers * ANSWER_COST),
    ];
    for (option, size) in sizes {
        if size > DEFAULT_BUFFER {
            set_int(fd, option, size);
        }
    }
    // Errors without the echoed request and with the kernel's text when it has one. Best
    // effort: without them the answers are still read.
    let _ = socket.set_cap_ack(true);
    let _ = socket.set_ext_ack(true);
    // A bounded wait.
    let timeout = libc::timeval {
        tv_sec: libc::time_t::try_from(ANSWER_TIMEOUT.as_secs()).unwrap_or(10),
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a pointer to a live timeval of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            socklen::<libc::timeval>(),
        )
    };
    if rc != 0 {
        return Err(TransactionError::Socket(io::Error::last_os_error()));
    }
    Ok(socket)
}

/// One `NLMSG_ERROR` answer: 0 for an acknowledgement.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    seq: u32,
    errno: i32,
    message: Option<String>,
}

const NLMSG_ERROR: u16 = 2;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// The error/ack messages in one datagram; anything else (or anything cut short) is skipped.
fn answers(mut buf: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    while let (Some(len), Some(kind), Some(flags)) =
        (u32_at(buf, 0), u16_at(buf, 4), u16_at(buf, 6))
    {
        let len = usize::try_from(len).unwrap_or(0);
        if len < 16 || len > buf.len() {
            break;
        }
        let msg = &buf[..len];
        // nlmsgerr: the error, then the request's header (only the header: CAP_ACK), then
        // attributes when ACK_TLVS is set.
        if kind == NLMSG_ERROR
            && let (Some(error), Some(seq)) = (u32_at(msg, 16), u32_at(msg, 20 + 8))
        {
            let errno = i32::from_ne_bytes(error.to_ne_bytes()).saturating_neg();
            let message = if flags & NLM_F_ACK_TLVS != 0 {
                tlv_message(msg.get(36..).unwrap_or_default())
            } else {
                None
            };
            out.push(Answer {
                seq,
                errno,
                message,
            });
        }
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

fn tlv_message(mut attrs: &[u8]) -> Option<String> {
    while let (Some(len), Some(kind)) = (u16_at(attrs, 0), u16_at(attrs, 2)) {
        let len = usize::from(len);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind & 0x3fff == NLMSGERR_ATTR_MSG {
            let text = &attrs[4..len];
            let text = text.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nlmsgerr(seq: u32, error: i32, flags: u16, tlvs: &[u8]) -> Vec<u8> {
        let len = 36 + tlvs.len();
        let mut msg = Vec::new();
        msg.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_ne_bytes());
        msg.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&[0; 8]);
        msg.extend_from_slice(&error.to_ne_bytes());
        // The request's header: length, type, flags, seq, pid.
        msg.extend_from_slice(&[0; 8]);
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&[0; 4]);
        msg.extend_from_slice(tlvs);
        msg
    }

    #[test]
    fn acknowledgements_and_refusals_are_read_with_the_kernels_text() {
        let mut datagram = nlmsgerr(3, 0, 0, &[]);
        let text = b"Chain not found\0";
        let mut tlv = Vec::new();
        tlv.extend_from_slice(&(4 + u16::try_from(text.len()).unwrap_or(0)).to_ne_bytes());
        tlv.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        tlv.extend_from_slice(text);
        while tlv.len() % 4 != 0 {
            tlv.push(0);
        }
        datagram.extend(nlmsgerr(4, -2, NLM_F_ACK_TLVS, &tlv));
        // A truncated trailing message is skipped, not read past its end.
        datagram.extend_from_slice(&[200, 0, 0, 0, 2, 0]);
        assert_eq!(
            answers(&datagram),
            [
                Answer {
                    seq: 3,
                    errno: 0,
                    message: None
                },
                Answer {
                    seq: 4,
                    errno: 2,
                    message: Some("Chain not found".into())
                },
            ]
        );
    }
}
