//! Saved records read back: one `taskspy/1` document, or a series of them (one per line, as
//! `taskspy watch --json`/repeated dumps write), from a file or standard input (`-`).

use crate::error::{Error, Result};
use crate::model::{Snapshot, SCHEMA};
use std::io::Read;

/// Largest saved input accepted (a 200,000-task snapshot is a few hundred MB).
const MAX_INPUT: u64 = 4 << 30;

fn bad(path: &str, detail: impl Into<String>) -> Error {
    Error::BadInput { path: path.to_string(), detail: detail.into() }
}

/// Every snapshot in `path` (`-` = standard input), in order. At least one, or an error.
pub fn load(path: &str) -> Result<Vec<Snapshot>> {
    let mut text = String::new();
    let read = if path == "-" {
        std::io::stdin().lock().take(MAX_INPUT).read_to_string(&mut text)
    } else {
        let f = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => bad(path, "no such file"),
            _ => bad(path, e.to_string()),
        })?;
        f.take(MAX_INPUT).read_to_string(&mut text)
    };
    read.map_err(|e| bad(path, format!("cannot read it: {e} (a taskspy snapshot is UTF-8 JSON)")))?;
    parse(path, &text)
}

pub fn parse(path: &str, text: &str) -> Result<Vec<Snapshot>> {
    let shown = if path == "-" { "standard input" } else { path };
    let mut out = Vec::new();
    for (i, doc) in serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>().enumerate() {
        let doc = doc.map_err(|e| bad(shown, format!("not JSON (document {}): {e}", i + 1)))?;
        let schema = doc.get("schema").and_then(|s| s.as_str()).unwrap_or("");
        if schema != SCHEMA {
            let hint = if schema.starts_with("taskspy") {
                format!(
                    "a {schema} document, not a snapshot: save one with `taskspy dump --json` or `s` in `taskspy top`"
                )
            } else {
                "not a taskspy snapshot (no \"schema\": \"taskspy/1\")".to_string()
            };
            return Err(bad(shown, hint));
        }
        let s: Snapshot = serde_json::from_value(doc)
            .map_err(|e| bad(shown, format!("a taskspy/1 document that does not match the schema: {e}")))?;
        out.push(s);
    }
    if out.is_empty() {
        return Err(bad(shown, "empty: no snapshot in it"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"{"schema":"taskspy/1","pid":7,"captured_at":"2026-01-01T00:00:00.000Z",
        "python":{"version":"3.12.1","executable":"/p","free_threaded":false,"gil_enabled":true},
        "threads":[],"tasks":[],"findings":[]}"#;

    #[test]
    fn one_or_many_documents() {
        assert_eq!(parse("x", ONE).unwrap().len(), 1);
        let two = format!("{}\n{}\n", ONE.replace('\n', " "), ONE.replace('\n', " "));
        assert_eq!(parse("x", &two).unwrap().len(), 2);
    }

    #[test]
    fn bad_inputs_say_what_is_wrong() {
        let e = parse("f.json", "").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = parse("f.json", "{nope").unwrap_err().to_string();
        assert!(e.contains("not JSON"), "{e}");
        let e = parse("f.json", r#"{"schema":"taskspy-ps/1"}"#).unwrap_err().to_string();
        assert!(e.contains("taskspy-ps/1") && e.contains("dump --json"), "{e}");
        let e = parse("f.json", r#"{"schema":"taskspy/1","pid":"x"}"#).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
        assert_eq!(parse("f.json", "[]").unwrap_err().exit_code(), crate::error::exit::BAD_INPUT);
    }
}
