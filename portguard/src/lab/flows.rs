//! Sending the planned flows, one at a time, and judging each: what `explain` expects, whether
//! the application at the other end got it, and which counter the datapath moved.

use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use portguard_common::packet::{Family, ipproto, tcp_flags};
use serde::Serialize;

use super::{LabError, error::failed};
use super::{
    expect::{Counter, Expected, Judge, L4, Owned, Pkt, Verdict},
    observe::{Moved, Observer},
    plan::{FlowSpec, Group, HOST, OUTSIDER, Plan, Probe, Skip, Target, VM},
    topology::in_ns,
    wire::{self, Raw},
};

/// How long a flow that should be dropped is given before it counts as dropped. Allowed flows
/// answer within a millisecond on veth; this bounds what every denied flow costs.
pub const DENY_WAIT: Duration = Duration::from_millis(300);
/// How long a flow that should be delivered is given. It returns as soon as it is, so this
/// only costs time when something is wrong, and keeps a busy machine from looking like a drop.
pub const DELIVER_WAIT: Duration = Duration::from_secs(2);

/// How long to wait for a flow with this expectation to arrive.
fn wait(exp: Option<&Expected>) -> Duration {
    if exp.is_none_or(Expected::delivers) {
        DELIVER_WAIT
    } else {
        DENY_WAIT
    }
}
/// How long an accepted connection may take to show up at the listener.
const ACCEPT_WAIT: Duration = Duration::from_secs(1);
/// The outsider's TCP service the host connects to.
const OUTSIDER_TCP: u16 = 443;
/// The outsider's UDP service the host queries.
const OUTSIDER_UDP: u16 = 53;
/// A UDP port nothing listens on at the outsider.
const CLOSED_UDP: u16 = 9;

/// The verdict of one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowResult {
    /// Observed as expected.
    Ok,
    /// Something differs: see `why`.
    Mismatch,
    /// Not sent: see `skip`.
    NotExercised,
}

/// One line of the lab's table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Why the flow is there.
    pub group: Group,
    /// The rule it exercises.
    pub rule: Option<String>,
    /// Label of the sender.
    pub from: String,
    /// Label of the receiver.
    pub to: String,
    /// Sender's address.
    pub src: Option<IpAddr>,
    /// Receiver's address.
    pub dst: Option<IpAddr>,
    /// `tcp/54321`, `icmpv6 135`, ...
    pub what: String,
    /// What `explain` says.
    pub expected: Option<Expected>,
    /// What host safety requires, when it requires something.
    pub required: Option<Verdict>,
    /// Whether the application at the other end got it (`None`: not observable).
    pub delivered: Option<bool>,
    /// Counters the flow moved.
    pub moved: Vec<Moved>,
    /// Remark.
    pub note: Option<String>,
    /// Why it was not sent.
    pub skip: Option<Skip>,
    /// Outcome.
    pub result: RowResult,
    /// What differs, for mismatches.
    pub why: Option<String>,
}

impl Row {
    fn blank(spec: &FlowSpec) -> Row {
        Row {
            required: spec.required,
            note: spec.note.clone(),
            ..Row::empty(spec.group, spec.rule.clone())
        }
    }

    fn empty(group: Group, rule: Option<String>) -> Row {
        Row {
            group,
            rule,
            from: String::new(),
            to: String::new(),
            src: None,
            dst: None,
            what: String::new(),
            expected: None,
            required: None,
            delivered: None,
            moved: Vec::new(),
            note: None,
            skip: None,
            result: RowResult::NotExercised,
            why: None,
        }
    }

    /// The verdict the datapath's counters show, for the picture: a rule or a passing reason
    /// moved (allowed), `not-for-host` (not judged), a dropping reason (denied).
    #[must_use]
    pub fn observed_verdict(&self) -> Option<Verdict> {
        let mut seen = None;
        for m in &self.moved {
            let v = match &m.counter {
                Counter::Rule(_) | Counter::Reason("reply" | "icmp-error-own-flow") => {
                    Verdict::Allowed
                }
                Counter::Reason("not-for-host") => Verdict::NotJudged,
                Counter::Reason("audit-passed") => continue,
                Counter::Reason(_) => Verdict::Denied,
            };
            // A denial outweighs anything else counted at the same time.
            if seen != Some(Verdict::Denied) {
                seen = Some(v);
            }
        }
        seen
    }

    /// Compare what happened with what was expected (and required), and set `result`.
    fn settle(&mut self) {
        let Some(exp) = &self.expected else {
            self.result = RowResult::NotExercised;
            return;
        };
        let mut why = Vec::new();
        if let Some(req) = self.required
            && req != exp.verdict
        {
            why.push(format!(
                "host safety requires `{}`, but the classifier says `{}`",
                req.name(),
                exp.text
            ));
        }
        if !self.moved.iter().any(|m| m.counter == exp.counter) {
            why.push(format!("{} did not count it", exp.counter));
        }
        let others: Vec<String> = self
            .moved
            .iter()
            .filter(|m| {
                matches!(m.counter, Counter::Rule(_)) && m.counter != exp.counter && !m.background
            })
            .map(|m| m.counter.to_string())
            .collect();
        if !others.is_empty() {
            why.push(format!("counted by {}", others.join(", ")));
        }
        if let Some(d) = self.delivered
            && d != exp.delivers()
        {
            why.push(if d {
                "delivered, but it should have been dropped".to_owned()
            } else {
                "not delivered".to_owned()
            });
        }
        if why.is_empty() {
            self.result = RowResult::Ok;
        } else {
            self.result = RowResult::Mismatch;
            self.why = Some(why.join("; "));
        }
    }
}

/// Whether the flow was delivered (when observable), and the counters it moved.
type Measured = (Option<bool>, Vec<Moved>);

/// Both ends of an inbound flow.
struct Leg {
    src: IpAddr,
    dst: IpAddr,
    src_ns: String,
    dst_ns: String,
    family: Family,
    /// How long to wait for it to arrive.
    wait: Duration,
}

/// Sends the planned flows.
#[derive(Debug)]
pub struct Runner<'a> {
    plan: &'a Plan,
    judge: &'a Judge<'a>,
    observer: &'a Observer,
}

static NEXT_ID: AtomicU16 = AtomicU16::new(1);

fn next_id() -> u16 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed) ^ (std::process::id() as u16)
}

fn unspecified(family: Family) -> IpAddr {
    if family == Family::V4 {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    }
}

/// Connect within `wait`: the stream when connected, `Err(true)` for a RST (the other stack
/// answered), `Err(false)` when nothing answered in time; an error for anything else.
fn connect(ns: &str, to: SocketAddr, wait: Duration) -> Result<Result<TcpStream, bool>, LabError> {
    let r = in_ns(ns, move || TcpStream::connect_timeout(&to, wait))?;
    match r {
        Ok(s) => Ok(Ok(s)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(Err(true)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Ok(Err(false))
        }
        Err(e) => Err(e).map_err(failed(format!("connecting from {ns} to {to}"))),
    }
}

/// The next connection on the non-blocking `listener`, waiting at most `ACCEPT_WAIT`.
fn accept_within(listener: &TcpListener) -> Option<TcpStream> {
    let deadline = Instant::now() + ACCEPT_WAIT;
    loop {
        match listener.accept() {
            Ok((s, _)) => return Some(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return None,
        }
    }
}

/// Accept the connection `client` made to `listener`, exchange a byte, and close both ends in
/// order, so no packet of this connection is still in flight when the next flow starts.
fn finish_tcp(listener: &TcpListener, client: TcpStream) -> Result<(), LabError> {
    let server = accept_within(listener);
    close_pair(client, server)
}

fn close_pair(mut client: TcpStream, server: Option<TcpStream>) -> Result<(), LabError> {
    client.set_read_timeout(Some(ACCEPT_WAIT))?;
    let _ = client.write_all(b"x");
    let _ = client.shutdown(std::net::Shutdown::Write);
    if let Some(mut s) = server {
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(ACCEPT_WAIT))?;
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        drop(s);
    }
    let mut sink = Vec::new();
    let _ = client.read_to_end(&mut sink);
    Ok(())
}

impl<'a> Runner<'a> {
    /// A runner for `plan`, judging with `judge`, counting with `observer`.
    #[must_use]
    pub fn new(plan: &'a Plan, judge: &'a Judge<'a>, observer: &'a Observer) -> Self {
        Runner {
            plan,
            judge,
            observer,
        }
    }

    /// The rows of one planned flow (two for [`Probe::OutboundTcp`]).
    pub fn run(&self, spec: &FlowSpec) -> Result<Vec<Row>, LabError> {
        let mut row = Row::blank(spec);
        let Some(probe) = spec.probe else {
            row.skip = spec.skip.as_ref().map(|s| s.0);
            row.why = spec.skip.as_ref().map(|s| s.1.clone());
            return Ok(vec![row]);
        };
        let mut rows = match probe {
            Probe::Inbound {
                from,
                to,
                family,
                l4,
            } => {
                self.inbound(&mut row, from, to, family, l4)?;
                vec![row]
            }
            Probe::OutboundTcp { family } => self.outbound_tcp(row, family)?,
            Probe::OutboundUdp { family } => {
                self.outbound_udp(&mut row, family)?;
                vec![row]
            }
            Probe::OutboundUdpClosed { family } => {
                self.outbound_udp_closed(&mut row, family)?;
                vec![row]
            }
            Probe::OutboundPing { family } => {
                self.outbound_ping(&mut row, family)?;
                vec![row]
            }
        };
        for r in &mut rows {
            if r.expected.is_some() {
                r.settle();
            }
        }
        Ok(rows)
    }

    fn addr(&self, who: usize, family: Family) -> Result<IpAddr, LabError> {
        let e = &self.plan.endpoints[who];
        e.addr(family).ok_or_else(|| LabError::NoAddress {
            who: e.label.clone(),
            family: match family {
                Family::V4 => "IPv4",
                Family::V6 => "IPv6",
            },
        })
    }

    fn ns(&self, who: usize) -> &str {
        &self.plan.endpoints[who].ns
    }

    fn label(&self, who: usize) -> String {
        self.plan.endpoints[who].label.clone()
    }

    /// A flow from a machine to the host (or the VM).
    fn inbound(
        &self,
        row: &mut Row,
        from: usize,
        to: Target,
        family: Family,
        l4: L4,
    ) -> Result<(), LabError> {
        let dst_i = if to == Target::Host { HOST } else { VM };
        let (src, dst) = (self.addr(from, family)?, self.addr(dst_i, family)?);
        let expected = self.judge.expect(&Pkt::new(src, dst, l4));
        let leg = Leg {
            src,
            dst,
            src_ns: self.ns(from).to_owned(),
            dst_ns: self.ns(dst_i).to_owned(),
            family,
            wait: wait(Some(&expected)),
        };
        row.from = self.label(from);
        row.to = self.label(dst_i);
        row.src = Some(src);
        row.dst = Some(dst);
        row.what = l4.label(family);
        row.expected = Some(expected);
        let (delivered, moved) = match l4 {
            L4::Tcp(port) => self.tcp_in(&leg, port)?,
            L4::Udp(port) => self.udp_in(&leg, port)?,
            L4::Sctp(port) => self.sctp_in(&leg, port)?,
            L4::Icmp { ty, code } => self.icmp_in(&leg, ty, code)?,
            L4::Ip(proto) => self.ip_in(&leg, proto)?,
        };
        row.delivered = delivered;
        row.moved = moved;
        Ok(())
    }

    /// A TCP connection to a listener: delivered when it connects.
    fn tcp_in(&self, leg: &Leg, port: u16) -> Result<Measured, LabError> {
        let to = SocketAddr::new(leg.dst, port);
        let listener = in_ns(&leg.dst_ns, move || TcpListener::bind(to))?
            .map_err(failed(format!("listening on {to} in {}", leg.dst_ns)))?;
        listener.set_nonblocking(true)?;
        self.observer
            .measure(|| match connect(&leg.src_ns, to, leg.wait)? {
                Ok(client) => finish_tcp(&listener, client).map(|()| Some(true)),
                Err(refused) => Ok(Some(refused)),
            })
    }

    /// A UDP datagram with a unique token: delivered when the listener reads it.
    fn udp_in(&self, leg: &Leg, port: u16) -> Result<Measured, LabError> {
        let to = SocketAddr::new(leg.dst, port);
        let rx = in_ns(&leg.dst_ns, move || UdpSocket::bind(to))?
            .map_err(failed(format!("binding {to} in {}", leg.dst_ns)))?;
        rx.set_read_timeout(Some(leg.wait))?;
        let bind = SocketAddr::new(leg.src, 0);
        let tx = in_ns(&leg.src_ns, move || UdpSocket::bind(bind))?
            .map_err(failed(format!("binding {bind} in {}", leg.src_ns)))?;
        let token = format!("portguard lab {}", next_id());
        self.observer.measure(|| {
            tx.send_to(token.as_bytes(), to)
                .map_err(failed(format!("sending to {to} from {}", leg.src_ns)))?;
            let deadline = Instant::now() + leg.wait;
            let mut buf = [0u8; 256];
            while Instant::now() < deadline {
                match rx.recv_from(&mut buf) {
                    Ok((n, peer)) if peer.ip() == leg.src && &buf[..n] == token.as_bytes() => {
                        return Ok(Some(true));
                    }
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(Some(false))
        })
    }

    /// An SCTP INIT from a raw socket. A raw socket receives every packet of its protocol, so
    /// its arrival is visible on the receiver whether or not that kernel has SCTP.
    /// A packet of another IP protocol (IGMP, VRRP...) with a payload of the lab's own: a raw
    /// socket of that protocol on the receiver gets a copy before the protocol's own handler
    /// looks at it, so delivery shows whatever the payload means to that handler.
    fn ip_in(&self, leg: &Leg, proto: u8) -> Result<Measured, LabError> {
        let family = leg.family;
        let rx = in_ns(&leg.dst_ns, move || Raw::new(family, proto))?.map_err(failed(format!(
            "raw socket of IP protocol {proto} on the receiver"
        )))?;
        let tx = in_ns(&leg.src_ns, move || Raw::new(family, proto))?.map_err(failed(format!(
            "raw socket of IP protocol {proto} on the sender"
        )))?;
        tx.bind(leg.src)?;
        self.observer.measure(|| {
            tx.send_to(wire::LAB_PAYLOAD, leg.dst)?;
            Ok(Some(
                rx.wait_for(Instant::now() + leg.wait, |p, from| {
                    from == leg.src && p == wire::LAB_PAYLOAD
                })?,
            ))
        })
    }

    fn sctp_in(&self, leg: &Leg, port: u16) -> Result<Measured, LabError> {
        let family = leg.family;
        let rx = in_ns(&leg.dst_ns, move || Raw::new(family, ipproto::SCTP))?
            .map_err(failed("raw SCTP socket on the receiver"))?;
        let tx = in_ns(&leg.src_ns, move || Raw::new(family, ipproto::SCTP))?
            .map_err(failed("raw SCTP socket on the sender"))?;
        tx.bind(leg.src)?;
        let init = wire::sctp_init(40000, port);
        self.observer.measure(|| {
            tx.send_to(&init, leg.dst)?;
            Ok(Some(
                rx.wait_for(Instant::now() + leg.wait, |p, from| {
                    from == leg.src && wire::is_sctp_init(p, port)
                })?,
            ))
        })
    }

    /// An ICMP message: an echo request is delivered when its reply comes back; any other type
    /// when a raw socket on the receiver sees it.
    fn icmp_in(&self, leg: &Leg, ty: u8, code: u8) -> Result<Measured, LabError> {
        let (family, src, dst) = (leg.family, leg.src, leg.dst);
        let proto = wire::icmp_proto(family);
        let tx = in_ns(&leg.src_ns, move || Raw::new(family, proto))?
            .map_err(failed("raw ICMP socket on the sender"))?;
        tx.bind(src)?;
        if let Some(h) = wire::hop_limit(family, ty) {
            tx.hops(h)?;
        }
        let id = next_id();
        let msg = wire::icmp_message(ty, code, id, src, dst);
        let (echo, reply) = wire::echo_types(family);
        if ty == echo {
            return self.observer.measure(|| {
                tx.send_to(&msg, dst)?;
                Ok(Some(tx.wait_for(
                    Instant::now() + leg.wait,
                    |p, from| {
                        from == dst && p.len() >= 6 && p[0] == reply && p[4..6] == id.to_be_bytes()
                    },
                )?))
            });
        }
        let rx = in_ns(&leg.dst_ns, move || Raw::new(family, proto))?
            .map_err(failed("raw ICMP socket on the receiver"))?;
        self.observer.measure(|| {
            tx.send_to(&msg, dst)?;
            Ok(Some(
                rx.wait_for(Instant::now() + leg.wait, |p, from| {
                    from == src && p.len() >= 2 && p[0] == ty && p[1] == code
                })?,
            ))
        })
    }

    fn outbound_row(
        &self,
        row: &mut Row,
        family: Family,
        what: String,
    ) -> Result<(IpAddr, IpAddr), LabError> {
        let (h, o) = (self.addr(HOST, family)?, self.addr(OUTSIDER, family)?);
        row.from = self.label(HOST);
        row.to = self.label(OUTSIDER);
        row.src = Some(h);
        row.dst = Some(o);
        row.what = what;
        Ok((h, o))
    }

    /// The host's TCP connection to the outsider, then an unsolicited SYN to its port.
    fn outbound_tcp(&self, mut row: Row, family: Family) -> Result<Vec<Row>, LabError> {
        let (h, o) = self.outbound_row(&mut row, family, format!("tcp/{OUTSIDER_TCP}"))?;
        let host_ns = self.ns(HOST).to_owned();
        let out_ns = self.ns(OUTSIDER).to_owned();
        let service = SocketAddr::new(o, OUTSIDER_TCP);
        let listener = in_ns(&out_ns, move || TcpListener::bind(service))?
            .map_err(failed(format!("listening on {service} in {out_ns}")))?;
        listener.set_nonblocking(true)?;
        let (client, moved) = self
            .observer
            .measure(|| connect(&host_ns, service, DELIVER_WAIT))?;
        let eph = client
            .as_ref()
            .ok()
            .and_then(|c| c.local_addr().ok())
            .map_or(0, |a| a.port());
        let owned = Owned {
            proto: ipproto::TCP,
            remote: o,
            rport: OUTSIDER_TCP,
            lport: eph,
        };
        row.expected = Some(self.judge.expect(&Pkt {
            sport: OUTSIDER_TCP,
            tcp_flags: tcp_flags::SYN | tcp_flags::ACK,
            owned: Some(owned),
            ..Pkt::new(o, h, L4::Tcp(eph))
        }));
        row.what = format!("tcp/{OUTSIDER_TCP}, SYN-ACK back to port {eph}");
        row.delivered = Some(client.is_ok());
        row.moved = moved;
        let mut syn = Row {
            group: Group::HostSafety,
            rule: None,
            from: self.label(OUTSIDER),
            to: self.label(HOST),
            src: Some(o),
            dst: Some(h),
            what: format!("tcp/{eph}"),
            required: Some(Verdict::Denied),
            note: Some("an unsolicited SYN to the port of the host's own connection".to_owned()),
            ..Row::empty(Group::HostSafety, None)
        };
        let Ok(client) = client else {
            syn.why = Some("not sent: the host's own connection failed".to_owned());
            return Ok(vec![row, syn]);
        };
        // Accept now, so the connection is fully established while the SYN arrives.
        let server = accept_within(&listener);
        syn.expected = Some(self.judge.expect(&Pkt {
            owned: Some(owned),
            ..Pkt::new(o, h, L4::Tcp(eph))
        }));
        let target = SocketAddr::new(h, eph);
        let limit = wait(syn.expected.as_ref());
        let (answer, moved) = self.observer.measure(|| connect(&out_ns, target, limit))?;
        // Connected or refused (RST): the host's stack saw the SYN. Silence: it was dropped.
        syn.delivered = Some(!matches!(answer, Err(false)));
        syn.moved = moved;
        drop(answer);
        close_pair(client, server)?;
        Ok(vec![row, syn])
    }

    /// A connected UDP socket of the host towards `port` of the outsider.
    fn host_udp(&self, o: IpAddr, port: u16, family: Family) -> Result<UdpSocket, LabError> {
        let peer = SocketAddr::new(o, port);
        let bind = SocketAddr::new(unspecified(family), 0);
        let s = in_ns(self.ns(HOST), move || {
            let s = UdpSocket::bind(bind)?;
            s.connect(peer)?;
            Ok::<_, io::Error>(s)
        })?
        .map_err(failed("UDP socket on the host"))?;
        s.set_read_timeout(Some(DELIVER_WAIT))?;
        Ok(s)
    }

    /// The host's UDP request to the outsider, and the response.
    fn outbound_udp(&self, row: &mut Row, family: Family) -> Result<(), LabError> {
        let (h, o) = self.outbound_row(row, family, format!("udp/{OUTSIDER_UDP}"))?;
        let service = SocketAddr::new(o, OUTSIDER_UDP);
        let server = in_ns(self.ns(OUTSIDER), move || UdpSocket::bind(service))?
            .map_err(failed(format!("binding {service} at the outsider")))?;
        server.set_read_timeout(Some(ACCEPT_WAIT))?;
        let client = self.host_udp(o, OUTSIDER_UDP, family)?;
        let eph = client.local_addr()?.port();
        row.what = format!("udp/{OUTSIDER_UDP}, response back to port {eph}");
        let owned = Owned {
            proto: ipproto::UDP,
            remote: o,
            rport: OUTSIDER_UDP,
            lport: eph,
        };
        row.expected = Some(self.judge.expect(&Pkt {
            sport: OUTSIDER_UDP,
            owned: Some(owned),
            ..Pkt::new(o, h, L4::Udp(eph))
        }));
        let (delivered, moved) = self.observer.measure(|| {
            client.send(b"query")?;
            let mut buf = [0u8; 64];
            let (_, peer) = server
                .recv_from(&mut buf)
                .map_err(failed("the host's request did not reach the outsider"))?;
            server.send_to(b"answer", peer)?;
            Ok(Some(client.recv(&mut buf).is_ok()))
        })?;
        row.delivered = delivered;
        row.moved = moved;
        Ok(())
    }

    /// The host's UDP datagram to a closed port of the outsider, and the ICMP error back.
    fn outbound_udp_closed(&self, row: &mut Row, family: Family) -> Result<(), LabError> {
        let (h, o) = self.outbound_row(row, family, format!("udp/{CLOSED_UDP}"))?;
        let client = self.host_udp(o, CLOSED_UDP, family)?;
        let eph = client.local_addr()?.port();
        let (ty, code) = if family == Family::V4 { (3, 3) } else { (1, 4) };
        row.what = format!(
            "udp/{CLOSED_UDP} (closed), {} back",
            L4::Icmp { ty, code }.label(family)
        );
        let owned = Owned {
            proto: ipproto::UDP,
            remote: o,
            rport: CLOSED_UDP,
            lport: eph,
        };
        row.expected = Some(self.judge.expect(&Pkt {
            quote: Some(owned),
            owned: Some(owned),
            ..Pkt::new(o, h, L4::Icmp { ty, code })
        }));
        let (delivered, moved) = self.observer.measure(|| {
            client.send(b"x")?;
            let mut buf = [0u8; 16];
            // The kernel reports the port-unreachable error on the connected socket.
            Ok(Some(matches!(
                client.recv(&mut buf),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
            )))
        })?;
        row.delivered = delivered;
        row.moved = moved;
        Ok(())
    }

    /// The host pings the outsider.
    fn outbound_ping(&self, row: &mut Row, family: Family) -> Result<(), LabError> {
        let (echo, reply) = wire::echo_types(family);
        let label = L4::Icmp { ty: echo, code: 0 }.label(family);
        let (h, o) = self.outbound_row(row, family, label)?;
        row.what = format!(
            "{}, {} back",
            L4::Icmp { ty: echo, code: 0 }.label(family),
            L4::Icmp { ty: reply, code: 0 }.label(family)
        );
        row.expected = Some(
            self.judge
                .expect(&Pkt::new(o, h, L4::Icmp { ty: reply, code: 0 })),
        );
        let limit = wait(row.expected.as_ref());
        let proto = wire::icmp_proto(family);
        let sock = in_ns(self.ns(HOST), move || Raw::new(family, proto))?
            .map_err(failed("raw ICMP socket on the host"))?;
        sock.bind(h)?;
        let id = next_id();
        let msg = wire::icmp_message(echo, 0, id, h, o);
        let (delivered, moved) = self.observer.measure(|| {
            sock.send_to(&msg, o)?;
            Ok(Some(sock.wait_for(Instant::now() + limit, |p, from| {
                from == o && p.len() >= 6 && p[0] == reply && p[4..6] == id.to_be_bytes()
            })?))
        })?;
        row.delivered = delivered;
        row.moved = moved;
        Ok(())
    }
}
