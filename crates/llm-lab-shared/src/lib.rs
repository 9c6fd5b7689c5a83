//! What the course crate (`llm-lab`), its binary (`llm-lab-cli`) and `cargo xtask` share.
//!
//! xtask stays light on purpose (the first `cargo xtask lab` on a new machine compiles it before
//! anything else), so it links neither candle nor the course crate; what it must agree on with
//! them lives here, in `std` only, and the model commands' arguments behind the `args` feature
//! (clap).

pub mod html;
pub mod protocol;

#[cfg(feature = "args")]
pub mod args;
