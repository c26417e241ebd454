//! The pure decision core: plan + state + observation + time -> what to do next.

mod phase;

pub use phase::Phase;
