//! Real traffic for the host-safety tests: TCP and UDP servers in a namespace, clients that
//! exchange a given amount of data, ping, and the waits that let counters settle.

use std::{
    io::{self, ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use integration_tests::net::Netns;

/// How long a connection attempt that must succeed may take.
pub(super) const CONNECT: Duration = Duration::from_secs(3);
/// How long to wait for a connection attempt that must fail: one SYN, no retransmission.
const REFUSE: Duration = Duration::from_millis(800);
/// Per-read/write timeout of every socket, so a stalled flow fails the test instead of hanging.
const IO: Duration = Duration::from_secs(10);

/// A TCP server in a namespace. Protocol: the client sends `upload: u64, reply: u64` and
/// `upload` bytes; the server then sends `reply` bytes and waits for the client to close first
/// (so the host, as a client, is the side that closes first and ends in `TIME_WAIT`).
pub(super) struct TcpServer {
    pub(super) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Listen on `addr` (port 0: any) inside `ns`.
    pub(super) fn start(ns: &Netns, addr: SocketAddr) -> Self {
        let listener = ns.run(move || TcpListener::bind(addr).expect("bind tcp"));
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (st, sv) = (stop.clone(), served.clone());
        let thread = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let sv = sv.clone();
                        thread::spawn(move || {
                            if serve(s).is_ok() {
                                sv.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        TcpServer {
            addr,
            stop,
            served,
            thread: Some(thread),
        }
    }

    /// Wait until `n` exchanges completed (each closed by the client), at most `IO`.
    pub(super) fn wait_served(&self, n: usize) -> bool {
        let start = Instant::now();
        while self.served.load(Ordering::Relaxed) < n {
            if start.elapsed() > IO {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut s: TcpStream) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(IO))?;
    s.set_write_timeout(Some(IO))?;
    let mut head = [0u8; 16];
    s.read_exact(&mut head)?;
    let upload = u64::from_be_bytes(head[..8].try_into().expect("8 bytes"));
    let reply = u64::from_be_bytes(head[8..].try_into().expect("8 bytes"));
    let got = io::copy(&mut (&mut s).take(upload), &mut io::sink())?;
    if got != upload {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    io::copy(&mut io::repeat(0x5a).take(reply), &mut s)?;
    // The client closes first. This side closes a little later, as a server finishing its
    // work would: by then the client's socket has left the socket table for the TIME_WAIT
    // table (an orphaned FIN_WAIT2 socket becomes a timewait socket), and this side's FIN must
    // still reach it.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    thread::sleep(Duration::from_millis(100));
    Ok(())
}

/// One exchange on an open connection: send `upload` bytes, receive `reply` bytes.
pub(super) fn exchange(s: &mut TcpStream, upload: u64, reply: u64) -> io::Result<()> {
    s.set_read_timeout(Some(IO))?;
    s.set_write_timeout(Some(IO))?;
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&upload.to_be_bytes());
    head[8..].copy_from_slice(&reply.to_be_bytes());
    s.write_all(&head)?;
    io::copy(&mut io::repeat(0xa5).take(upload), s)?;
    let got = io::copy(&mut s.take(reply), &mut io::sink())?;
    if got == reply {
        Ok(())
    } else {
        Err(ErrorKind::UnexpectedEof.into())
    }
}

/// Connect from inside `ns` (the connection's socket lives there).
pub(super) fn connect(ns: &Netns, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    ns.run(move || TcpStream::connect_timeout(&to, timeout))
}

/// Connect from `ns` to `to`, exchange, close; the error if any step failed.
pub(super) fn tcp_call(ns: &Netns, to: SocketAddr, upload: u64, reply: u64) -> io::Result<()> {
    let mut s = connect(ns, to, CONNECT)?;
    exchange(&mut s, upload, reply)
}

/// Assert that a connection from `ns` to `to` neither connects nor is refused: the SYN was
/// dropped on the way (a SYN the host's stack saw would get a SYN-ACK or a RST).
pub(super) fn assert_syn_dropped(ns: &Netns, to: SocketAddr, what: &str) {
    match connect(ns, to, REFUSE) {
        Ok(_) => panic!("{what}: {to} connected, the SYN must be dropped"),
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock),
            "{what}: {to}: {e} ({:?}); a drop shows as a timeout, a refusal means the host's \
             stack saw the SYN",
            e.kind()
        ),
    }
}

/// A UDP server in a namespace that echoes every datagram to its sender.
pub(super) struct UdpEcho {
    pub(super) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    pub(super) fn start(ns: &Netns, addr: SocketAddr) -> Self {
        let sock = ns.run(move || UdpSocket::bind(addr).expect("bind udp"));
        let addr = sock.local_addr().expect("local addr");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        UdpEcho {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connected UDP socket in `ns` on `local` (any port) talking to `to`.
pub(super) fn udp_client(ns: &Netns, local: IpAddr, to: SocketAddr) -> UdpSocket {
    let s = ns.run(move || {
        let s = UdpSocket::bind((local, 0)).expect("bind udp client");
        s.connect(to).expect("connect udp");
        s
    });
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    s
}

/// Send a request of `len` bytes on a connected socket and wait for the echo (three tries:
/// the first datagram may wait for neighbour resolution).
pub(super) fn udp_request(s: &UdpSocket, len: usize) -> bool {
    let req = vec![0x42u8; len];
    let mut buf = vec![0u8; len + 1];
    (0..3).any(|_| {
        s.send(&req).is_ok() && matches!(s.recv(&mut buf), Ok(n) if n == len && buf[..n] == req[..])
    })
}

/// A UDP socket bound to `addr` inside `ns`, for counting what arrives.
pub(super) fn udp_sink(ns: &Netns, addr: SocketAddr) -> UdpSocket {
    let s = ns.run(move || UdpSocket::bind(addr).expect("bind udp sink"));
    s.set_read_timeout(Some(Duration::from_millis(400)))
        .expect("timeout");
    s
}

/// Send `count` datagrams of `len` bytes from `from` (any port) in `ns` to `to`.
pub(super) fn udp_send(ns: &Netns, from: IpAddr, to: SocketAddr, len: usize, count: usize) {
    ns.run(move || {
        let s = UdpSocket::bind((from, 0)).expect("bind udp sender");
        for _ in 0..count {
            s.send_to(&vec![7u8; len], to).expect("send");
            // Paced so that the receiver's queue is never the reason for a loss.
            thread::sleep(Duration::from_millis(20));
        }
    });
}

/// Lengths of the datagrams waiting on `s` (until it stays quiet for its read timeout).
pub(super) fn udp_received(s: &UdpSocket) -> Vec<usize> {
    let mut buf = vec![0u8; 65536];
    let mut lens = Vec::new();
    while let Ok(n) = s.recv(&mut buf) {
        lens.push(n);
    }
    lens
}

/// `ping` from `ns` to `to`: whether echo replies came back (iputils, bounded by `-w`).
pub(super) fn ping(ns: &Netns, to: IpAddr) -> bool {
    let to = to.to_string();
    ns.output(&[
        "ping", "-q", "-n", "-c", "3", "-i", "0.2", "-W", "1", "-w", "4", &to,
    ])
    .status
    .success()
}

/// `ip:port`.
pub(super) fn sock(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// Poll `f` until it holds, for at most two seconds. Counters move when the receiving side's
/// softirq has run, which may be just after the sending call returned; the assertion that
/// follows says what was expected.
pub(super) fn eventually(mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() && start.elapsed() < Duration::from_secs(2) {
        thread::sleep(Duration::from_millis(20));
    }
}

/// Let the last packets of closed connections (FIN, ACK) cross the program before counters
/// are read. Only ever delays a check; no assertion depends on how long anything took.
pub(super) fn settle() {
    thread::sleep(Duration::from_millis(300));
}
