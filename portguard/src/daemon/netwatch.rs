//! Notice link and address changes (hot-plug, DHCP renewals, VLAN devices created later)
//! through an rtnetlink multicast subscription, without polling.
//!
//! Messages are only a trigger: on any change the daemon re-reads the addresses and interfaces
//! (getifaddrs) and reconciles, which also covers a lost message (`ENOBUFS` counts as a change).

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use tokio::io::unix::AsyncFd;

const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

/// A subscription to link and address changes of this network namespace.
#[derive(Debug)]
pub struct NetWatch {
    fd: AsyncFd<OwnedFd>,
}

impl NetWatch {
    /// Subscribe (needs a tokio runtime with IO enabled).
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2) call.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; zero is a valid start.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // Routes too: the local table changes without an address event for AnyIP routes.
        addr.nl_groups = RTMGRP_LINK
            | RTMGRP_IPV4_IFADDR
            | RTMGRP_IPV6_IFADDR
            | RTMGRP_IPV4_ROUTE
            | RTMGRP_IPV6_ROUTE;
        // SAFETY: valid socket and address of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: we own `fd`, and it stays open as long as the AsyncFd that holds it.
        let fd = unsafe { AsyncFd::register(fd)? };
        Ok(NetWatch { fd })
    }

    /// Wait until something changed, then drain every queued message.
    pub async fn changed(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut got = false;
            let mut buf = [0u8; 8192];
            loop {
                // SAFETY: valid fd and buffer.
                let n = unsafe {
                    libc::recv(
                        self.fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                    )
                };
                if n >= 0 {
                    got = true;
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::ENOBUFS) => got = true,
                    Some(libc::EINTR) => {}
                    _ => return Err(e),
                }
            }
            guard.clear_ready();
            if got {
                return Ok(());
            }
        }
    }
}
