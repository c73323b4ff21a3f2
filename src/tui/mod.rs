//! tui: the live terminal UI (`taskspy top`). State and its key handling (`state`), drawing
//! (`view`) and the terminal/event loop with its background sampler (`runner`) are kept apart.

pub mod runner;
pub mod state;
pub mod view;

#[cfg(test)]
mod tests;
