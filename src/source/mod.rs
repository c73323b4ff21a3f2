//! source: where target memory and thread facts come from — a live process (/proc,
//! process_vm_readv, ptrace pause) or an ELF core plus the binaries on disk; nothing above knows which.

pub mod cache;
pub mod core;
pub mod elf;
pub mod footprint;
pub mod image;
pub mod live;
pub mod maps;
pub mod memory;
pub mod os;
pub mod pause;
pub mod proctree;
pub mod target;

pub use live::attach;
pub use memory::{words, Buf, MemError, MemResult, Memory, SyntheticMemory};
pub use target::Target;
