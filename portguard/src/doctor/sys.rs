//! The bpf(2) calls the probes make, on raw `union bpf_attr` buffers, and the tiny programs
//! they load, as raw instructions.
//!
//! Raw calls rather than aya: aya decides by itself whether to use a `bpf_link` or netlink,
//! and whether to set flags, from the kernel version; a probe must ask the kernel the exact
//! question and see its exact answer (errno and verifier log).

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

/// One eBPF instruction as the kernel reads it (`struct bpf_insn`, little-endian host).
pub(super) type Insn = [u8; 8];

/// `struct bpf_insn { u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm; }`.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    let o = off.to_le_bytes();
    let i = imm.to_le_bytes();
    [
        code,
        (src << 4) | (dst & 0x0f),
        o[0],
        o[1],
        i[0],
        i[1],
        i[2],
        i[3],
    ]
}

/// `dst = imm` (`BPF_ALU64 | BPF_MOV | BPF_K`).
const fn mov_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}
/// `dst = src` (`BPF_ALU64 | BPF_MOV | BPF_X`).
const fn mov_reg(dst: u8, src: u8) -> Insn {
    insn(0xbf, dst, src, 0, 0)
}
/// `dst += imm` (`BPF_ALU64 | BPF_ADD | BPF_K`).
const fn add_imm(dst: u8, imm: i32) -> Insn {
    insn(0x07, dst, 0, 0, imm)
}
/// `*(u64 *)(dst + off) = imm` (`BPF_ST | BPF_MEM | BPF_DW`).
const fn store_u64(dst: u8, off: i16, imm: i32) -> Insn {
    insn(0x7a, dst, 0, off, imm)
}
/// `if dst == imm goto +off` (`BPF_JMP | BPF_JEQ | BPF_K`).
const fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(0x15, dst, 0, off, imm)
}
/// Call helper number `id`.
const fn call(id: i32) -> Insn {
    insn(0x85, 0, 0, 0, id)
}
/// Return r0.
const EXIT: Insn = insn(0x95, 0, 0, 0, 0);

/// The frame pointer (read-only) and the context register.
const R10: u8 = 10;
const R1: u8 = 1;

/// `XDP_PASS` and `TCX_PASS`/`TC_ACT_OK`.
pub(super) const XDP_PASS: u32 = 2;
const TC_ACT_OK: i32 = 0;

/// Helper numbers (`enum bpf_func_id`).
pub(super) const HELPER_SK_LOOKUP_UDP: i32 = 85;
const HELPER_SK_RELEASE: i32 = 86;
pub(super) const HELPER_SKC_LOOKUP_TCP: i32 = 99;
pub(super) const HELPER_KTIME_GET_COARSE_NS: i32 = 160;
pub(super) const HELPER_XDP_GET_BUFF_LEN: i32 = 188;

/// `return XDP_PASS;`
pub(super) fn xdp_pass() -> Vec<Insn> {
    vec![mov_imm(0, XDP_PASS.cast_signed()), EXIT]
}

/// `return TC_ACT_OK;` (tc / tcx).
pub(super) fn tc_pass() -> Vec<Insn> {
    vec![mov_imm(0, TC_ACT_OK), EXIT]
}

/// Call a helper that takes the context (or nothing) and returns a scalar, then pass.
pub(super) fn xdp_call_scalar(helper: i32) -> Vec<Insn> {
    // r1 holds the context on entry; a helper that takes none ignores it.
    vec![call(helper), mov_imm(0, XDP_PASS.cast_signed()), EXIT]
}

/// Look a socket up with `helper` (`bpf_skc_lookup_tcp` or `bpf_sk_lookup_udp`) for an all-zero
/// IPv4 tuple in the current netns, release it if found (the verifier insists), then pass.
pub(super) fn xdp_socket_lookup(helper: i32) -> Vec<Insn> {
    /// `sizeof(struct bpf_sock_tuple.ipv4)`: two addresses and two ports.
    const TUPLE_V4: i32 = 12;
    /// `BPF_F_CURRENT_NETNS`.
    const CURRENT_NETNS: i32 = -1;
    vec![
        mov_reg(6, R1),
        store_u64(R10, -16, 0),
        store_u64(R10, -8, 0),
        mov_reg(2, R10),
        add_imm(2, -16),
        mov_reg(1, 6),
        mov_imm(3, TUPLE_V4),
        mov_imm(4, CURRENT_NETNS),
        mov_imm(5, 0),
        call(helper),
        jeq_imm(0, 0, 2),
        mov_reg(1, 0),
        call(HELPER_SK_RELEASE),
        mov_imm(0, XDP_PASS.cast_signed()),
        EXIT,
    ]
}

/// Program types (`enum bpf_prog_type`).
pub(super) const PROG_TYPE_SCHED_CLS: u32 = 3;
pub(super) const PROG_TYPE_XDP: u32 = 6;
/// Map types (`enum bpf_map_type`).
pub(super) const MAP_TYPE_ARRAY: u32 = 2;
pub(super) const MAP_TYPE_LRU_HASH: u32 = 9;
pub(super) const MAP_TYPE_LPM_TRIE: u32 = 11;
pub(super) const MAP_TYPE_RINGBUF: u32 = 27;
/// Attach types (`enum bpf_attach_type`).
pub(super) const ATTACH_XDP: u32 = 37;
pub(super) const ATTACH_TCX_EGRESS: u32 = 47;
/// `BPF_F_XDP_HAS_FRAGS`: the program accepts multi-buffer frames (5.18).
pub(super) const F_XDP_HAS_FRAGS: u32 = 1 << 5;
/// `BPF_F_NO_PREALLOC`, which LPM tries require.
pub(super) const F_NO_PREALLOC: u32 = 1;
/// `BPF_F_MMAPABLE` (1 << 10): an array the loader may mmap (the policy image).
pub(super) const F_MMAPABLE: u32 = 1 << 10;
/// `XDP_FLAGS_SKB_MODE`: generic XDP, which every device has.
pub(super) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;

/// bpf(2) commands.
const CMD_MAP_CREATE: i64 = 0;
const CMD_PROG_LOAD: i64 = 5;
const CMD_PROG_TEST_RUN: i64 = 10;
const CMD_LINK_CREATE: i64 = 28;
const CMD_LINK_UPDATE: i64 = 29;

/// A zeroed `union bpf_attr`, larger than every member used here (kernels reject only
/// non-zero bytes past the end of the union they know).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }
    fn u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn read_u32(&self, at: usize) -> u32 {
        let mut b = [0; 4];
        b.copy_from_slice(&self.0[at..at + 4]);
        u32::from_ne_bytes(b)
    }
}

/// Run bpf(2); the attribute buffer and everything it points to must stay alive for the call.
#[expect(clippy::cast_possible_wrap, reason = "the buffer is 128 bytes")]
fn bpf(cmd: i64, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, writable buffer of the size passed; every pointer stored in
    // it by the callers refers to memory that outlives this call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            attr.0.len() as libc::c_long,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Wrap a file descriptor bpf(2) returned.
fn fd(raw: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(raw as i32) }
}

/// A program the kernel did not load: the error, and the verifier's last words.
#[derive(Debug)]
pub(super) struct Refused {
    /// What bpf(2) returned.
    pub(super) error: io::Error,
    /// The last line of the verifier log (empty when the verifier did not run).
    pub(super) log: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.log.is_empty() {
            write!(f, "{}", errno_text(&self.error))
        } else {
            write!(f, "{}: {}", errno_text(&self.error), self.log)
        }
    }
}

/// An errno as its name where the kernel uses one libc does not know (524 is ENOTSUPP).
pub(super) fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(524) => "ENOTSUPP (operation not supported)".to_owned(),
        _ => e.to_string(),
    }
}

/// `BPF_PROG_LOAD`.
pub(super) fn prog_load(prog_type: u32, flags: u32, insns: &[Insn]) -> Result<OwnedFd, Refused> {
    let license = c"GPL";
    let mut log = vec![0u8; 1 << 16];
    let mut attr = Attr::new();
    attr.u32(0, prog_type)
        .u32(4, insns.len() as u32)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(24, 1)
        .u32(28, log.len() as u32)
        .u64(32, log.as_mut_ptr() as u64)
        .u32(44, flags);
    attr.0[48..56].copy_from_slice(b"pg_probe");
    match bpf(CMD_PROG_LOAD, &mut attr) {
        Ok(raw) => Ok(fd(raw)),
        Err(error) => {
            let text = String::from_utf8_lossy(&log);
            let log = text
                .trim_end_matches('\0')
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with("processed "))
                .unwrap_or_default()
                .to_owned();
            Err(Refused { error, log })
        }
    }
}

/// `BPF_MAP_CREATE`.
pub(super) fn map_create(
    map_type: u32,
    key: u32,
    value: u32,
    max_entries: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, map_type)
        .u32(4, key)
        .u32(8, value)
        .u32(12, max_entries)
        .u32(16, flags);
    bpf(CMD_MAP_CREATE, &mut attr).map(fd)
}

/// `BPF_LINK_CREATE` of `prog` on the device `ifindex` (of the calling thread's netns).
pub(super) fn link_create(
    prog: &OwnedFd,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, prog.as_raw_fd().cast_unsigned())
        .u32(4, ifindex)
        .u32(8, attach_type)
        .u32(12, flags);
    bpf(CMD_LINK_CREATE, &mut attr).map(fd)
}

/// `BPF_LINK_UPDATE`: put `prog` in `link` in place of the program it runs.
pub(super) fn link_update(link: &OwnedFd, prog: &OwnedFd) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.u32(0, link.as_raw_fd().cast_unsigned())
        .u32(4, prog.as_raw_fd().cast_unsigned());
    bpf(CMD_LINK_UPDATE, &mut attr).map(drop)
}

/// `BPF_PROG_TEST_RUN` of `prog` on one frame; the program's return value.
pub(super) fn test_run(prog: &OwnedFd, frame: &[u8]) -> io::Result<u32> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = Attr::new();
    attr.u32(0, prog.as_raw_fd().cast_unsigned())
        .u32(8, frame.len() as u32)
        .u32(12, out.len() as u32)
        .u64(16, frame.as_ptr() as u64)
        .u64(24, out.as_mut_ptr() as u64)
        .u32(32, 1);
    bpf(CMD_PROG_TEST_RUN, &mut attr)?;
    Ok(attr.read_u32(4))
}

/// Run `f` on a thread of its own, in a new network namespace that exists only for it, with
/// the index of that namespace's loopback device. The namespace (and anything attached to its
/// devices) goes away when the thread ends; nothing of the host's is touched.
pub(super) fn in_private_netns<T: Send>(f: impl FnOnce(u32) -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare affects this thread only (a thread may have a network namespace
            // of its own); the thread ends when `f` returns.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a NUL-terminated literal.
            let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
            if lo == 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f(lo))
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the probe thread panicked")))
    })
}

/// The running kernel's release (`uname -r`).
pub(super) fn kernel_release() -> String {
    // SAFETY: uname fills the struct we pass.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out pointer.
    if unsafe { libc::uname(&raw mut u) } != 0 {
        return "unknown".to_owned();
    }
    // SAFETY: uname NUL-terminates the field.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}
