//! hping3 floods from spoofed sources, and an allowed TCP flow that keeps opening connections
//! and exchanging data while they run.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    process::Output,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use integration_tests::net::Netns;

use super::lan::{Bounded, Machine};

/// How long one attempt of the allowed flow may take (connect, and each read and write): far
/// more than it needs, so only a flow that is really cut off fails.
const ATTEMPT: Duration = Duration::from_secs(10);
/// Bytes each attempt sends and reads back.
const EXCHANGE: usize = 4096;

/// An echo server on `[::]:port` in a namespace: each connection gets back what it sends.
#[derive(Debug)]
pub(super) struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    pub(super) fn start(ns: &Netns, port: u16) -> Self {
        let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        let listener = ns.run(move || TcpListener::bind(addr).expect("bind echo"));
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        thread::spawn(move || {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(ATTEMPT));
                            let _ = s.set_write_timeout(Some(ATTEMPT));
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = s.read(&mut buf) {
                                if n == 0 || s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Echo {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: connect, send [`EXCHANGE`] bytes, read them back, close.
fn attempt(to: SocketAddr, n: usize) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&to, ATTEMPT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(ATTEMPT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(ATTEMPT))
        .map_err(|e| e.to_string())?;
    let data: Vec<u8> = (0..EXCHANGE).map(|i| (i + n) as u8).collect();
    s.write_all(&data).map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0u8; EXCHANGE];
    s.read_exact(&mut back)
        .map_err(|e| format!("read back: {e}"))?;
    if back == data {
        Ok(())
    } else {
        Err("echoed bytes differ".into())
    }
}

/// What the allowed flow saw.
#[derive(Debug, Default)]
pub(super) struct Attempts {
    /// Attempts made.
    pub(super) made: usize,
    /// Attempts that began while a flood was running.
    pub(super) during_flood: usize,
    /// The ones that failed, with why.
    pub(super) failed: Vec<String>,
}

/// Connections from a machine to the host, one after another, alternating between the
/// addresses in `to`, until stopped.
#[derive(Debug)]
pub(super) struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Attempts>>,
}

impl Prober {
    /// Start probing; `flooding` tells it whether a flood is running when an attempt begins.
    pub(super) fn start(from: &Machine, to: Vec<SocketAddr>, flooding: Arc<AtomicBool>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = from.ns.spawn(move || {
            let mut seen = Attempts::default();
            // At least one attempt after the stop, so the last flood's tail is covered too.
            loop {
                let last = st.load(Ordering::Relaxed);
                let n = seen.made;
                let dst = to[n % to.len()];
                if flooding.load(Ordering::Relaxed) {
                    seen.during_flood += 1;
                }
                if let Err(e) = attempt(dst, n) {
                    seen.failed.push(format!("attempt {n} to {dst}: {e}"));
                }
                seen.made += 1;
                if last {
                    return seen;
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        Prober {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop after one more attempt; what all the attempts saw.
    pub(super) fn finish(mut self) -> Attempts {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("prober")
            .join()
            .expect("prober thread")
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `hping3` from `from` to `target:port` with TCP `flags` (`-S`, `-A`), `count` packets from
/// the spoofed source `spoofed`, one every microsecond at most (`-i u1`; hping3 sleeps between
/// packets, which makes it a bounded flood rather than `--flood`'s unbounded one), at most
/// `limit` in all.
pub(super) fn hping3(
    from: &Machine,
    flags: &str,
    spoofed: IpAddr,
    target: IpAddr,
    port: u16,
    count: u32,
    limit: Duration,
) -> Bounded {
    Bounded::spawn(
        &from.ns,
        &[
            "hping3",
            "-q",
            flags,
            "-p",
            &port.to_string(),
            "-a",
            &spoofed.to_string(),
            "-i",
            "u1",
            "-c",
            &count.to_string(),
            "-I",
            &from.ifname,
            &target.to_string(),
        ],
        limit,
    )
}

/// Packets hping3 says it sent (`N packets transmitted` in its statistics; it exits 1 when
/// nothing answered, which is what a flood of a protected host should see).
pub(super) fn sent(out: &Output) -> u64 {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| {
            let (n, rest) = l.trim().split_once(' ')?;
            rest.starts_with("packets tr").then(|| n.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no statistics in hping3's output:\n{text}"))
}
