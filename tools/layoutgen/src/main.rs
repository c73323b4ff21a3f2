//! layoutgen: generate python_layouts/*.json (per-version CPython struct
//! layouts) from DWARF debug info. See python_layouts/README.md.

mod elf;
mod extract;
mod headers;
mod layout;
mod spec;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::layout::Layout;

const USAGE: &str = "\
layoutgen: write CPython struct layouts (python_layouts/*.json) from DWARF

USAGE:
  layoutgen dwarf --label 3.8 --python-version 3.8.18 [--out FILE] [--check] ELF...
  layoutgen pyenv PYENV_VERSION_DIR [--out-dir python_layouts] [--label L] [--check]
  layoutgen headers --label 3.14 --python-version 3.14.1 --include DIR [--include DIR...]
                    [--define NAME[=VALUE]...] [--cc gcc] [--cflag FLAG...] [--keep-c FILE]
                    [--out FILE] [--check]
  layoutgen check LAYOUT_JSON ELF...
  layoutgen dump NAME ELF...          (debug: members of a logical struct or C name)

Without --out, the JSON goes to standard output. With --check nothing is
written: the layout is regenerated in memory and compared with --out (or the
file `check` names); exit status 1 and a summary when they differ.
";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("layoutgen: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

struct Args {
    items: Vec<String>,
}

impl Args {
    /// Remove `--name VALUE` (or `--name=VALUE`) occurrences; return the values.
    fn take_all(&mut self, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut i = 0;
        let prefix = format!("{name}=");
        while i < self.items.len() {
            if self.items[i] == name {
                if i + 1 >= self.items.len() {
                    bail!("{name} needs a value");
                }
                out.push(self.items.remove(i + 1));
                self.items.remove(i);
            } else if let Some(v) = self.items[i].strip_prefix(&prefix) {
                out.push(v.to_string());
                self.items.remove(i);
            } else {
                i += 1;
            }
        }
        Ok(out)
    }
    fn take(&mut self, name: &str) -> Result<Option<String>> {
        let mut v = self.take_all(name)?;
        if v.len() > 1 {
            bail!("{name} given more than once");
        }
        Ok(v.pop())
    }
    fn flag(&mut self, name: &str) -> bool {
        let before = self.items.len();
        self.items.retain(|a| a != name);
        before != self.items.len()
    }
    fn positional(self) -> Result<Vec<String>> {
        if let Some(bad) = self.items.iter().find(|a| a.starts_with("--")) {
            bail!("unknown option {bad}\n\n{USAGE}");
        }
        Ok(self.items)
    }
}

fn run() -> Result<ExitCode> {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() || argv.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    let cmd = argv.remove(0);
    let mut args = Args { items: argv };
    match cmd.as_str() {
        "dwarf" => {
            let label = args.take("--label")?.context("--label is required")?;
            let version = args.take("--python-version")?.context("--python-version is required")?;
            let out = args.take("--out")?.map(PathBuf::from);
            let check = args.flag("--check");
            let files = args.positional()?;
            if files.is_empty() {
                bail!("no ELF files given");
            }
            let paths: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
            let start = Instant::now();
            let layout = from_elfs(&paths, &label, &version)?;
            emit(&layout, out.as_deref(), check, start)
        }
        "check" => {
            let mut pos = args.positional()?;
            if pos.len() < 2 {
                bail!("usage: layoutgen check LAYOUT_JSON ELF...");
            }
            let json = PathBuf::from(pos.remove(0));
            let committed = Layout::read(&json)?;
            let paths: Vec<PathBuf> = pos.iter().map(PathBuf::from).collect();
            let start = Instant::now();
            let layout = from_elfs(&paths, &committed.label, &committed.python_version)?;
            emit(&layout, Some(&json), true, start)
        }
        "pyenv" => {
            let out_dir = PathBuf::from(args.take("--out-dir")?.unwrap_or_else(|| "python_layouts".into()));
            let label = args.take("--label")?;
            let check = args.flag("--check");
            let pos = args.positional()?;
            let [dir] = pos.as_slice() else { bail!("usage: layoutgen pyenv PYENV_VERSION_DIR [--out-dir DIR]") };
            pyenv(Path::new(dir), &out_dir, label, check)
        }
        "headers" => {
            let label = args.take("--label")?.context("--label is required")?;
            let version = args.take("--python-version")?.context("--python-version is required")?;
            let out = args.take("--out")?.map(PathBuf::from);
            let check = args.flag("--check");
            let verbose = args.flag("--verbose");
            let opts = headers::HeadersOptions {
                includes: args.take_all("--include")?.into_iter().map(PathBuf::from).collect(),
                defines: args.take_all("--define")?,
                cc: args.take("--cc")?.unwrap_or_else(|| "gcc".into()),
                cflags: args.take_all("--cflag")?,
                keep_c: args.take("--keep-c")?.map(PathBuf::from),
                verbose,
            };
            args.positional()?;
            if opts.includes.is_empty() {
                bail!("--include is required");
            }
            let start = Instant::now();
            let compiled = headers::compile(&opts)?;
            let elf = elf::load(&compiled.object)?;
            let program = extract::Program::new(vec![elf])?;
            let mut layout = program.layout(&label, &version, "layoutgen headers")?;
            layout.sources = compiled.headers.clone();
            emit(&layout, out.as_deref(), check, start)
        }
        "dump" => {
            let mut pos = args.positional()?;
            if pos.len() < 2 {
                bail!("usage: layoutgen dump NAME ELF...");
            }
            let name = pos.remove(0);
            let elfs = pos.iter().map(|p| elf::load(Path::new(p))).collect::<Result<Vec<_>>>()?;
            let program = extract::Program::new(elfs)?;
            let owned;
            let spec = match spec::STRUCTS.iter().find(|s| s.logical == name) {
                Some(s) => s,
                None => {
                    let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
                    let names: &'static [&'static str] = Box::leak(vec![leaked].into_boxed_slice());
                    owned = spec::StructSpec { logical: leaked, c_names: names, paths: &[], unit_suffix: None };
                    &owned
                }
            };
            match program.describe(spec)? {
                Some(lines) => {
                    for l in lines {
                        println!("{l}");
                    }
                }
                None => match program.enum_values(&name)? {
                    Some(values) => {
                        for (k, v) in values {
                            println!("  {k} = {v}");
                        }
                    }
                    None => bail!(
                        "{name}: no struct definition or enum found (note: dump only finds C names the spec lists)"
                    ),
                },
            }
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

fn from_elfs(paths: &[PathBuf], label: &str, version: &str) -> Result<Layout> {
    let elfs = paths.iter().map(|p| elf::load(p)).collect::<Result<Vec<_>>>()?;
    let program = extract::Program::new(elfs)?;
    program.layout(label, version, "layoutgen dwarf")
}

fn summary(layout: &Layout) -> String {
    format!(
        "{} {}{}: {} structs, {} fields, {} enums, from {}",
        layout.label,
        layout.python_version,
        if layout.free_threaded { " (free-threaded)" } else { "" },
        layout.structs.len(),
        layout.field_count(),
        layout.enums.len(),
        if layout.sources.len() > 4 {
            format!("{} + {} more", layout.sources[0], layout.sources.len() - 1)
        } else {
            layout.sources.join(" + ")
        }
    )
}

fn emit(layout: &Layout, out: Option<&Path>, check: bool, start: Instant) -> Result<ExitCode> {
    let secs = start.elapsed().as_secs_f64();
    if check {
        let out = out.context("--check needs --out (the committed file to compare with)")?;
        let committed = Layout::read(out)?;
        let (diffs, notes) = layout::diff(&committed, layout);
        for n in &notes {
            eprintln!("note: {}: {n}", out.display());
        }
        if diffs.is_empty() {
            println!("ok {} matches ({}) [{secs:.2} s]", out.display(), summary(layout));
            return Ok(ExitCode::SUCCESS);
        }
        for d in &diffs {
            println!("  {d}");
        }
        println!(
            "MISMATCH {}: {} difference(s) from the regenerated layout ({}) — regenerate it (see python_layouts/README.md)",
            out.display(),
            diffs.len(),
            summary(layout)
        );
        return Ok(ExitCode::from(1));
    }
    let text = layout.to_json()?;
    match out {
        Some(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {} ({}) [{secs:.2} s]", path.display(), summary(layout));
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The inputs found in a pyenv version directory.
struct PyenvInputs {
    version: String,
    elfs: Vec<PathBuf>,
}

fn pyenv_inputs(dir: &Path) -> Result<PyenvInputs> {
    let version = detect_version(dir)?;
    let mm = major_minor(&version).with_context(|| format!("cannot parse Python version {version:?}"))?;
    let lib = dir.join("lib");
    let mut elfs = Vec::new();

    // libpython3.X[t].so.1.0 (the real file, not a symlink); a static build
    // has everything in bin/python3.X instead.
    let mut libs: Vec<PathBuf> = read_dir_sorted(&lib)?
        .into_iter()
        .filter(|p| {
            let n = file_name(p);
            (n.starts_with(&format!("libpython{mm}.so")) || n.starts_with(&format!("libpython{mm}t.so")))
                && !p.is_symlink()
                && p.is_file()
        })
        .collect();
    libs.sort();
    match libs.first() {
        Some(l) => elfs.push(l.clone()),
        None => {
            let exe = [format!("python{mm}"), format!("python{mm}t")]
                .iter()
                .map(|n| dir.join("bin").join(n))
                .find(|p| p.is_file())
                .with_context(|| format!("no libpython{mm}*.so* in {} and no bin/python{mm}", lib.display()))?;
            elfs.push(std::fs::canonicalize(exe)?);
        }
    }

    // Extension modules that carry structs we want, when built as shared objects.
    let stdlib = [format!("python{mm}"), format!("python{mm}t")]
        .iter()
        .map(|n| lib.join(n).join("lib-dynload"))
        .find(|p| p.is_dir());
    if let Some(dynload) = stdlib {
        for module in ["_asyncio", "_thread", "_collections"] {
            for p in read_dir_sorted(&dynload)? {
                let n = file_name(&p);
                if n.starts_with(&format!("{module}.")) && n.ends_with(".so") {
                    elfs.push(p);
                }
            }
        }
    }
    Ok(PyenvInputs { version, elfs })
}

fn pyenv(dir: &Path, out_dir: &Path, label: Option<String>, check: bool) -> Result<ExitCode> {
    let start = Instant::now();
    let inputs = pyenv_inputs(dir)?;
    let mm = major_minor(&inputs.version).unwrap_or_default();
    let elfs = inputs.elfs.iter().map(|p| elf::load(p)).collect::<Result<Vec<_>>>()?;
    let program = extract::Program::new(elfs)?;
    let mut layout = program.layout("", &inputs.version, "layoutgen dwarf")?;
    layout.label = label.unwrap_or_else(|| if layout.free_threaded { format!("{mm}t") } else { mm.clone() });
    let out = out_dir.join(format!("{}.json", layout.label));
    emit(&layout, Some(&out), check, start)
}

fn detect_version(dir: &Path) -> Result<String> {
    for exe in ["python3", "python"] {
        let path = dir.join("bin").join(exe);
        if !path.exists() {
            continue;
        }
        if let Ok(out) = Command::new(&path)
            .args(["-S", "-c", "import sys; print(sys.version.split()[0])"])
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME")
            .output()
        {
            let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && major_minor(&v).is_some() {
                return Ok(v);
            }
        }
    }
    // Fall back to the directory name (pyenv names versions like 3.13.0 or 3.13.0t).
    let name = file_name(dir);
    let v: String = name.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    if major_minor(&v).is_some() {
        return Ok(v);
    }
    bail!(
        "cannot detect the Python version of {} (no working bin/python3, and the directory name is not a version)",
        dir.display()
    )
}

fn major_minor(version: &str) -> Option<String> {
    let mut it = version.split('.');
    let major: u32 = it.next()?.parse().ok()?;
    let minor: String = it.next()?.chars().take_while(|c| c.is_ascii_digit()).collect();
    let minor: u32 = minor.parse().ok()?;
    Some(format!("{major}.{minor}"))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
