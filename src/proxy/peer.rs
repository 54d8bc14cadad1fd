//! Whether the agent behind a plain (non-tunnelled) proxy connection is still there. The
//! listener supports half-closed connections (an agent may shut its sending side and still get
//! its answer), so hyper never reads while a request is being served and cannot tell that the
//! agent left. A payment that only its own request could use (a single-use credential held
//! for approval) asks this instead: end of stream or a reset on the socket means the agent is
//! gone.

use crate::pay::Requester;
use std::os::fd::{AsRawFd, RawFd};

/// The agent's socket, by descriptor. Only the connection's own requests hold one, and only
/// while they are being served, so the descriptor is the connection's for as long as it is
/// asked (see [`PeerSocket::gone`]).
#[derive(Debug)]
pub struct PeerSocket {
    fd: RawFd,
}

impl PeerSocket {
    /// The socket of an accepted connection.
    pub fn of(stream: &tokio::net::TcpStream) -> PeerSocket {
        PeerSocket {
            fd: stream.as_raw_fd(),
        }
    }
}

impl Requester for PeerSocket {
    /// Peeks one byte without waiting: `0` (the agent closed or half-closed its side) or an
    /// error other than "would block" (reset) mean it is gone; pending bytes or nothing to
    /// read yet mean it is still there.
    fn gone(&self) -> bool {
        let mut byte = [0u8; 1];
        // SAFETY: `fd` is the socket of the connection whose request is being served: that
        // connection (and so the descriptor) lives at least as long as the request, the only
        // holder of this value; `byte` is a valid one-byte buffer; MSG_PEEK leaves the stream
        // as it was and MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::recv(
                self.fd,
                byte.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => true,
            n if n > 0 => false,
            _ => {
                let e = std::io::Error::last_os_error();
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                )
            }
        }
    }
}
