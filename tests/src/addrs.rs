//! The addresses of the packet-level tests (`BPF_PROG_TEST_RUN`): the protected host, a peer in
//! the peers' networks, a stranger outside them, and the source sets rules name.

/// The protected host, `198.18.0.1`.
pub const HOST4: [u8; 4] = [198, 18, 0, 1];
/// The protected host, `2001:db8::1`.
pub const HOST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// The directed broadcast address of the host's subnet, `198.18.0.255`.
pub const BCAST4: [u8; 4] = [198, 18, 0, 255];
/// Another address of the host's subnet (a guest behind the bridge), `198.18.0.50`.
pub const GUEST4: [u8; 4] = [198, 18, 0, 50];
/// A peer inside [`PEERS`], `198.18.1.7`.
pub const PEER4: [u8; 4] = [198, 18, 1, 7];
/// A peer inside [`PEERS`], `2001:db8:1::7`.
pub const PEER6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
/// A source outside [`PEERS`] (in `198.19.0.0/16`), `198.19.200.1`.
pub const STRANGER4: [u8; 4] = [198, 19, 200, 1];

/// The peers' networks, one a family.
pub const PEERS: [&str; 2] = ["198.18.1.0/24", "2001:db8:1::/48"];
/// Every source, both families.
pub const ANYWHERE: [&str; 2] = ["0.0.0.0/0", "::/0"];
