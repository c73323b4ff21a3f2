//! Terminal colour for text output: the `--color auto|always|never` decision (with `NO_COLOR`) and a
//! small post-processing colouriser for `dump` text. The renderers never emit escape sequences
//! themselves, so output that is piped or written with colour off contains none at all.

use super::Output;

/// When to colour text output (`--color`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorWhen {
    /// Colour only when stdout is a terminal and `NO_COLOR` is unset or empty.
    #[default]
    Auto,
    /// Always colour, even when piped or `NO_COLOR` is set.
    Always,
    /// Never colour.
    Never,
}

const BOLD: &str = "\x1b[1m";
const GREEN: &str = "\x1b[32m";
const RESET: &str = "\x1b[0m";

/// Whether to colour, given the choice, whether stdout is a terminal and the value of `NO_COLOR`
/// (see <https://no-color.org>: set and non-empty disables colour; `--color always` still wins).
pub fn enabled(when: ColorWhen, stdout_is_tty: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => stdout_is_tty && !matches!(no_color, Some(v) if !v.is_empty()),
    }
}

/// The decision for this process: its stdout and its environment.
pub fn enabled_for_stdout(when: ColorWhen) -> bool {
    use std::io::IsTerminal;
    enabled(when, std::io::stdout().is_terminal(), std::env::var_os("NO_COLOR").as_deref())
}

/// Colour `dump` text: thread header lines bold, ", holds the GIL" green. Other lines unchanged.
/// Names read from the target are already escaped by the renderer, so they cannot fake a header's
/// escape sequences; the GIL marker is looked for where the renderer puts it (just before
/// `) ident 0x`), the last occurrence, so a thread *named* "…, holds the GIL…" is not matched.
pub fn colorize_dump(text: &str) -> String {
    const MARK: &str = ", holds the GIL";
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        if !body.starts_with("Thread ") {
            out.push_str(line);
            continue;
        }
        let gil_at = body.rfind(") ident 0x").and_then(|end| {
            let start = end.checked_sub(MARK.len())?;
            (body.get(start..end) == Some(MARK)).then_some(start)
        });
        out.push_str(BOLD);
        match gil_at {
            Some(start) => {
                out.push_str(&body[..start]);
                // Reset then re-enter bold so the rest of the header stays bold.
                out.push_str(&format!("{RESET}{BOLD}{GREEN}{MARK}{RESET}{BOLD}"));
                out.push_str(&body[start + MARK.len()..]);
            }
            None => out.push_str(body),
        }
        out.push_str(RESET);
        out.push_str(nl);
    }
    out
}

/// Apply [`colorize_dump`] to text output (also inside `WithCode`); JSON is never coloured.
pub fn colorize_output(out: Output) -> Output {
    match out {
        Output::Text(t) => Output::Text(colorize_dump(&t)),
        Output::WithCode(inner, code) => Output::WithCode(Box::new(colorize_output(*inner)), code),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn decision() {
        assert!(enabled(ColorWhen::Auto, true, None));
        assert!(enabled(ColorWhen::Auto, true, Some(OsStr::new(""))));
        assert!(!enabled(ColorWhen::Auto, true, Some(OsStr::new("1"))));
        assert!(!enabled(ColorWhen::Auto, false, None));
        assert!(enabled(ColorWhen::Always, false, Some(OsStr::new("1"))));
        assert!(!enabled(ColorWhen::Never, true, None));
    }

    #[test]
    fn colours_headers_and_gil() {
        let text = "Process 1: python\n\nThread 1 \"MainThread\" (running, holds the GIL) ident 0x1\n    f (a.py:1)\n\nThread 2 \"w, holds the GIL) ident 0x\" (idle) ident 0x2\n";
        let c = colorize_dump(text);
        assert!(c.contains(&format!("{BOLD}Thread 1 \"MainThread\" (running{RESET}{BOLD}{GREEN}, holds the GIL{RESET}{BOLD}) ident 0x1{RESET}\n")));
        assert!(c.contains("\n    f (a.py:1)\n"));
        // The name mimics the marker but the real header has no GIL marker: bold only, no green.
        let last = c.lines().last().unwrap();
        assert!(last.starts_with(BOLD) && !last.contains(GREEN), "{last:?}");
        assert_eq!(c.replace(BOLD, "").replace(GREEN, "").replace(RESET, ""), text);
    }
}
