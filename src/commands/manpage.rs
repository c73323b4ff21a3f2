//! `taskspy man`: a single roff manual page (section 1) generated from the clap definition with
//! clap_mangen: NAME, SYNOPSIS, DESCRIPTION, OPTIONS, then every subcommand with its own options,
//! EXIT STATUS (from the exit-code table shown in `--help`), ENVIRONMENT, NOTES and VERSION.
//! Install it with `taskspy man > ~/.local/share/man/man1/taskspy.1`.

use super::Output;
use crate::error::{Error, Result};
use clap::{Arg, ArgAction, Command};
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

/// The manual page for `cmd` (the binary's own `Cli::command()`), as roff source.
pub fn man_page(mut cmd: Command) -> Result<Output> {
    cmd.build();
    let io = |e: std::io::Error| Error::other(format!("rendering the man page: {e}"));
    let man = Man::new(cmd.clone()).title(cmd.get_name().to_uppercase());
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    type Section = fn(&Man, &mut dyn std::io::Write) -> std::io::Result<()>;
    let head: [Section; 5] = [
        Man::render_title,
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
        Man::render_options_section,
    ];
    for render in head {
        let mut b = Vec::new();
        render(&man, &mut b).map_err(io)?;
        chunks.push(b);
    }
    chunks.push(own_sections(&cmd).render().into_bytes());
    let mut b = Vec::new();
    man.render_version_section(&mut b).map_err(io)?;
    chunks.push(b);

    // Every roff render starts with the same two-line apostrophe preamble: keep only the first.
    let preamble = Roff::new().render();
    let mut page = String::new();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let text = String::from_utf8(chunk).map_err(|e| Error::other(format!("man page is not UTF-8: {e}")))?;
        match text.strip_prefix(preamble.as_str()) {
            Some(rest) if i > 0 => page.push_str(rest),
            _ => page.push_str(&text),
        }
    }
    Ok(Output::Text(page))
}

/// COMMANDS, EXIT STATUS, ENVIRONMENT and NOTES.
fn own_sections(cmd: &Command) -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let usage = sub.clone().render_usage().to_string();
        let usage = usage.trim().strip_prefix("Usage:").unwrap_or(&usage).trim().to_string();
        r.control("SS", [usage.as_str()]);
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            paragraph(&mut r, &about.to_string());
        }
        let args: Vec<&Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set())
            .filter(|a| {
                !matches!(
                    a.get_action(),
                    ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
                )
            })
            .collect();
        for a in args {
            r.control("TP", []);
            r.text(arg_header(a));
            let mut help = a.get_long_help().or_else(|| a.get_help()).map(|h| h.to_string()).unwrap_or_default();
            let takes_value = a.get_action().takes_values();
            let pv: Vec<String> =
                a.get_possible_values().iter().filter(|v| !v.is_hide_set()).map(|v| v.get_name().to_string()).collect();
            if takes_value && !pv.is_empty() {
                help.push_str(&format!(" [possible values: {}]", pv.join(", ")));
            }
            let defaults: Vec<String> =
                a.get_default_values().iter().map(|d| d.to_string_lossy().into_owned()).collect();
            if takes_value && !defaults.is_empty() {
                help.push_str(&format!(" [default: {}]", defaults.join(", ")));
            }
            r.text([roman(help.trim().to_string())]);
        }
    }

    // The exit-code table is the root command's after-help ("Exit codes:" then "  CODE  meaning").
    let codes: Vec<(String, String)> = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(|t| t.to_string())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (code, meaning) = l.trim().split_once(char::is_whitespace)?;
            code.parse::<i32>().ok()?;
            Some((code.to_string(), meaning.trim().to_string()))
        })
        .collect();
    if !codes.is_empty() {
        r.control("SH", ["EXIT STATUS"]);
        for (code, meaning) in codes {
            r.control("TP", []);
            r.text([bold(code)]);
            r.text([roman(meaning)]);
        }
    }

    r.control("SH", ["ENVIRONMENT"]);
    r.control("TP", []);
    r.text([bold("NO_COLOR")]);
    r.text([roman(
        "When set to a non-empty value, text output is not coloured (unless --color always is given). \
         Colour is only ever used when standard output is a terminal or --color always is given.",
    )]);

    r.control("SH", ["NOTES"]);
    paragraph(
        &mut r,
        "Reading another process's memory needs the same rights as ptrace(2): run as root, grant the binary \
         CAP_SYS_PTRACE (setcap cap_sys_ptrace+ep $(which taskspy)), or allow same-user tracing with \
         sysctl kernel.yama.ptrace_scope=0. In Docker add --cap-add SYS_PTRACE; in Kubernetes use an \
         ephemeral debug container that shares the target's process namespace (kubectl debug -it POD \
         --image=IMAGE --target=CONTAINER). taskspy only reads the target's memory: it never runs code in \
         it and never writes to it, and pauses it only with --blocking.",
    );
    r
}

fn paragraph(r: &mut Roff, text: &str) {
    for line in text.lines() {
        if line.trim().is_empty() {
            r.control("PP", []);
        } else {
            r.text([roman(line.to_string())]);
        }
    }
}

/// `-p, --pid PID` / `PID` in the usual man-page typography.
fn arg_header(a: &Arg) -> Vec<Inline> {
    let value = a
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| a.get_id().as_str().to_uppercase());
    let mut out = Vec::new();
    if a.is_positional() {
        out.push(italic(value));
        return out;
    }
    if let Some(s) = a.get_short() {
        out.push(bold(format!("-{s}")));
    }
    if let Some(l) = a.get_long() {
        if !out.is_empty() {
            out.push(roman(", "));
        }
        out.push(bold(format!("--{l}")));
    }
    if a.get_action().takes_values() {
        out.push(roman(" "));
        out.push(italic(value));
    }
    out
}
