//! Subcommand implementations: each turns parsed arguments into output using the pipeline.
//! They return `Result` and never exit the process themselves.

pub mod demo;
pub mod dump;
pub mod tasks;
