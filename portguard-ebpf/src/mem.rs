//! Zeroing and copying bytes without the compiler's `memset` and `memmove`.
//!
//! Why this exists: LLVM's BPF backend lowers `llvm.memset` and `llvm.memmove` to calls of the
//! `memset`/`memmove` that compiler-builtins links in, even for three bytes. One such call makes
//! the program two BPF functions, and verifiers before Linux 6.4 then mark every scalar precise
//! (`__mark_reg_unknown`: `precise = subprog_cnt > 1`), so no two states ever prune each other:
//! Linux 6.1 gave up on the program after a million instructions where 6.18 needs a fraction.
//! Volatile stores are never merged back into a `memset`, and a constant count unrolls into
//! plain stores. Keep every zeroing and address copy on the XDP path going through here; the
//! unit test `the_xdp_program_calls_no_bpf_function` (in `portguard::ebpf::datapath`) fails the
//! build when a call is back, and `llvm-objdump -dr` on the object shows where.

use core::mem::MaybeUninit;

/// Zero `n` bytes at `dst`, one volatile store each.
///
/// # Safety
/// `dst..dst + n` must be writable.
#[inline(always)]
pub(crate) unsafe fn zero_bytes(dst: *mut u8, n: usize) {
    let mut i = 0;
    while i < n {
        // SAFETY: inside the caller's writable range.
        unsafe { dst.add(i).write_volatile(0) };
        i += 1;
    }
}

/// `slot`, all zero, as a `T`.
///
/// # Safety
/// The all-zero bit pattern must be a valid `T` (plain integers and arrays of them).
#[inline(always)]
pub(crate) unsafe fn zeroed<T>(slot: &mut MaybeUninit<T>) -> &mut T {
    // SAFETY: the slot is writable for its size; all-zero is a valid T (caller's promise).
    unsafe {
        zero_bytes(slot.as_mut_ptr().cast::<u8>(), size_of::<T>());
        slot.assume_init_mut()
    }
}

/// Copy an address, one volatile byte at a time.
#[inline(always)]
pub(crate) fn copy16(dst: &mut [u8; 16], src: &[u8; 16]) {
    let mut i = 0;
    while i < 16 {
        // SAFETY: both arrays have 16 bytes.
        unsafe { dst.as_mut_ptr().add(i).write_volatile(src[i]) };
        i += 1;
    }
}
