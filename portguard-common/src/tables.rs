//! The compiled policy tables: the contract between the loader's compiler (which builds
//! them), the datapath (which holds them in maps) and the reference classifier (which reads
//! them from memory).

use std::vec::Vec;

use crate::{
    config::Config,
    maps::{PORT_SPACE, PROTO_SLOTS},
};

/// The compiled policy tables, exactly as the loader writes them into the maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    /// `CONFIG[0]`.
    pub config: Config,
    /// `SRC_V4`: (prefix, length, source class).
    pub src_v4: Vec<([u8; 4], u8, u32)>,
    /// `SRC_V6`: (prefix, length, source class).
    pub src_v6: Vec<([u8; 16], u8, u32)>,
    /// `PORTS`: `PROTO_SLOTS * PORT_SPACE` port classes.
    pub ports: Vec<u16>,
    /// `DECISIONS`: `source classes * port classes` entries of rule slot + 1.
    pub decisions: Vec<u32>,
}

impl Tables {
    /// Empty tables of the right geometry (everything denied).
    #[must_use]
    pub fn empty() -> Self {
        Tables {
            config: Config {
                port_classes: 1,
                ..Config::default()
            },
            ports: vec_of(0, (PROTO_SLOTS * PORT_SPACE) as usize),
            decisions: vec_of(0, 1),
            ..Tables::default()
        }
    }
}

fn vec_of<T: Clone>(v: T, n: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    out.resize(n, v);
    out
}
