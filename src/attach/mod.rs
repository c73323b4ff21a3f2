//! attach: access to the target process — memory reads, its memory map, ELF symbols, pausing.
//! Everything above this layer sees a `Target` and a `Memory`, never /proc or ptrace directly.

pub mod cache;
pub mod elf;
pub mod maps;
pub mod memory;
pub mod pause;
pub mod process;

pub use memory::{words, Buf, MemError, MemResult, Memory, SyntheticMemory};
pub use process::{attach, Target};
