//! TUI state: the latest snapshot, the flattened task tree with expand/collapse and filter, the
//! selection (kept on the same task across refreshes), findings history and GIL history.

use crate::analysis::tree::{self, TreeNode};
use crate::model::{Finding, Snapshot};
use std::collections::{HashMap, HashSet, VecDeque};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Threads,
    Tasks,
}

/// One visible line of the task tree.
#[derive(Debug, Clone)]
pub struct Row {
    pub depth: usize,
    pub id: crate::model::Text,
    pub name: crate::model::Text,
    pub state: crate::model::Text,
    pub waiting_on: crate::model::Text,
    /// Seconds at its current await point (after the second refresh).
    pub waiting_s: Option<f64>,
    pub has_children: bool,
    pub expanded: bool,
    pub cycle: bool,
    pub shown_elsewhere: bool,
    pub in_finding: bool,
}

/// GIL and CPU shares of one thread over the last sampling window.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadShare {
    pub gil_pct: f64,
    pub cpu_pct: f64,
}

#[derive(Debug, Clone, Default)]
pub struct GilWindow {
    pub held_pct: f64,
    pub switches_per_s: f64,
    pub per_thread: HashMap<i32, ThreadShare>,
    /// Free-threaded builds: what limits parallelism over the window.
    pub free_threading: Option<FtWindow>,
}

/// The GIL pane's view of a free-threaded build over one window.
#[derive(Debug, Clone, Default)]
pub struct FtWindow {
    /// Mean number of threads running Python at once.
    pub parallelism: f64,
    /// Share of samples with the world stopped.
    pub stw_pct: f64,
    /// The most waited-on lock: "contender-0 on 'shared_lock' 61%".
    pub top_lock_wait: Option<String>,
}

impl GilWindow {
    /// The pane's numbers from a `taskspy gil` report of one refresh window. On free-threaded
    /// builds a thread's share is the time it ran Python (there is no GIL to hold).
    pub fn from_report(r: &crate::analysis::gil::GilReport, cpu: &HashMap<i32, f64>) -> GilWindow {
        let per_thread = r
            .threads
            .iter()
            .map(|t| {
                let share = t.running_python_pct.unwrap_or(t.holds_gil_pct);
                (t.tid, ThreadShare { gil_pct: share, cpu_pct: cpu.get(&t.tid).copied().unwrap_or(0.0) })
            })
            .collect();
        let free_threading = r.free_threading.as_ref().map(|ft| FtWindow {
            parallelism: ft.parallelism,
            stw_pct: ft.stop_the_world_pct,
            top_lock_wait: ft.lock_waits.first().map(|w| {
                let lock = w.lock.name.clone().unwrap_or_else(|| w.lock.address.clone());
                format!("{} on '{}' {:.0}%", w.name.clone().unwrap_or_else(|| w.tid.to_string()), lock, w.pct)
            }),
        });
        GilWindow {
            held_pct: r.gil_held_pct,
            switches_per_s: r.switches_per_s.unwrap_or(0.0),
            per_thread,
            free_threading,
        }
    }
}

/// What the view shows of one process; in `--subprocesses` mode one per process, the others
/// kept aside while another is on screen (selection and collapsed tasks survive switching).
#[derive(Default)]
pub struct ProcView {
    pub snapshot: Option<Snapshot>,
    pub rows: Vec<Row>,
    pub collapsed: HashSet<String>,
    pub selected_task: Option<String>,
    pub task_cursor: usize,
    pub task_offset: usize,
    pub thread_cursor: usize,
    pub findings: Vec<(String, Finding)>,
    pub gil_history: VecDeque<u64>,
    pub switch_history: VecDeque<u64>,
    pub gil: GilWindow,
    pub exited: bool,
    pub refresh_cost_ms: f64,
    roots: Vec<TreeNode>,
    cycles: Vec<Vec<String>>,
}

impl ProcView {
    /// Take in a new look: tree, findings (kept once seen), GIL history, snapshot. Rows are
    /// rebuilt by the caller when this view is on screen.
    fn absorb(&mut self, snap: Snapshot, findings: Vec<Finding>, gil: Option<GilWindow>) {
        let t = tree::build(&snap.tasks);
        self.roots = t.roots;
        self.cycles = t.cycles;
        for f in findings {
            let key = format!("{}:{}", f.kind, f.summary);
            if !self.findings.iter().any(|(k, _)| *k == key) {
                self.findings.push((key, f)); // findings stay listed once seen
            }
        }
        if let Some(g) = gil {
            // Free-threaded builds chart parallelism (threads running Python ×10) instead.
            let level = g.free_threading.as_ref().map(|f| f.parallelism * 10.0).unwrap_or(g.held_pct);
            push(&mut self.gil_history, level.round() as u64);
            push(&mut self.switch_history, g.switches_per_s.round() as u64);
            self.gil = g;
        }
        self.snapshot = Some(snap);
    }
}

/// One line of the process list (`top --subprocesses`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessTab {
    pub pid: i32,
    pub depth: u32,
    pub role: Option<String>,
    pub cmdline: String,
    /// ok | skipped | gone | error
    pub status: String,
    pub note: Option<String>,
}

pub struct App {
    /// The process on screen.
    pub pid: i32,
    pub view: ProcView,
    /// `--subprocesses`: every process of the tree, in tree order (empty for one process).
    pub processes: Vec<ProcessTab>,
    /// Views of the processes not on screen.
    pub others: HashMap<i32, ProcView>,
    pub focus: Pane,
    pub filter: String,
    pub editing_filter: bool,
    pub paused: bool,
    pub show_help: bool,
    pub status: String,
    pub replay: bool,
    pub quit: bool,
    /// Colours on (modifiers such as reverse video for the selection are kept either way).
    pub color: bool,
}

impl std::ops::Deref for App {
    type Target = ProcView;
    fn deref(&self) -> &ProcView {
        &self.view
    }
}

impl std::ops::DerefMut for App {
    fn deref_mut(&mut self) -> &mut ProcView {
        &mut self.view
    }
}

pub const HISTORY: usize = 120;

/// What a key press asks the runner to do beyond changing state.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Save,
}

impl App {
    pub fn new(pid: i32, replay: bool) -> App {
        App {
            pid,
            view: ProcView::default(),
            processes: vec![],
            others: HashMap::new(),
            focus: Pane::Tasks,
            filter: String::new(),
            editing_filter: false,
            paused: false,
            show_help: false,
            status: String::new(),
            replay,
            quit: false,
            color: true,
        }
    }

    /// Apply a new snapshot of the process on screen (ignored while paused: the view stays frozen).
    pub fn update(&mut self, snap: Snapshot, findings: Vec<Finding>, gil: Option<GilWindow>) {
        if self.paused {
            return;
        }
        self.view.absorb(snap, findings, gil);
        self.rebuild_rows();
        let n = self.snapshot.as_ref().map(|s| s.threads.len()).unwrap_or(0);
        self.view.thread_cursor = self.thread_cursor.min(n.saturating_sub(1));
    }

    /// A new look at any process of the tree: on screen, or kept for when it is selected.
    pub fn update_process(&mut self, pid: i32, snap: Snapshot, findings: Vec<Finding>, gil: Option<GilWindow>) {
        if pid == self.pid {
            self.update(snap, findings, gil);
        } else if !self.paused {
            self.others.entry(pid).or_default().absorb(snap, findings, gil);
        }
    }

    /// The process tree as last listed. The process on screen stays selected while listed;
    /// views of processes no longer listed are dropped (bounded by the tree's size).
    pub fn set_processes(&mut self, tabs: Vec<ProcessTab>) {
        if self.paused {
            return;
        }
        let listed: HashSet<i32> = tabs.iter().map(|t| t.pid).collect();
        self.others.retain(|pid, _| listed.contains(pid));
        self.processes = tabs;
        if !self.processes.is_empty() && !listed.contains(&self.pid) {
            // The process on screen left the tree: keep showing its last look, marked exited.
            self.view.exited = true;
        }
    }

    /// Mark a process as exited (its last look stays on screen).
    pub fn process_exited(&mut self, pid: i32) {
        if pid == self.pid {
            self.view.exited = true;
        } else if let Some(v) = self.others.get_mut(&pid) {
            v.exited = true;
        }
    }

    /// Index of the process on screen in the process list.
    pub fn process_index(&self) -> Option<usize> {
        self.processes.iter().position(|t| t.pid == self.pid)
    }

    /// Show another process of the list (`delta` steps, clamped), keeping each view's state.
    pub fn switch_process(&mut self, delta: i64) {
        if self.processes.is_empty() {
            return;
        }
        let n = self.processes.len() as i64;
        let at = self.process_index().map(|i| i as i64).unwrap_or(0);
        let to = (at + delta).clamp(0, n - 1) as usize;
        self.show_process(self.processes[to].pid);
    }

    pub fn show_process(&mut self, pid: i32) {
        if pid == self.pid {
            return;
        }
        let next = self.others.remove(&pid).unwrap_or_default();
        let prev = std::mem::replace(&mut self.view, next);
        // A view of a process no longer listed is not kept.
        if self.processes.iter().any(|t| t.pid == self.pid) {
            self.others.insert(self.pid, prev);
        }
        self.pid = pid;
        self.rebuild_rows();
        let tab = self.processes.iter().find(|t| t.pid == pid);
        self.status = match (tab, &self.view.snapshot) {
            (Some(t), None) if t.status != "ok" => {
                format!("PID {pid}: {} {}", t.status, t.note.clone().unwrap_or_default())
            }
            (Some(_), None) => format!("PID {pid}: waiting for its first look"),
            _ => String::new(),
        };
    }

    fn finding_tasks(&self) -> HashSet<&str> {
        self.findings.iter().flat_map(|(_, f)| f.tasks.iter().map(String::as_str)).collect()
    }

    /// Flatten the visible tree (respecting collapse and filter) and keep the selection on its task.
    pub fn rebuild_rows(&mut self) {
        let marked: HashSet<String> = self.finding_tasks().into_iter().map(str::to_string).collect();
        let in_cycle: HashSet<&str> = self.cycles.iter().flatten().map(String::as_str).collect();
        let filter = self.filter.to_lowercase();
        let matches = |n: &TreeNode| {
            filter.is_empty()
                || n.name.to_lowercase().contains(&filter)
                || n.coroutine_stack.iter().any(|f| f.function.to_lowercase().contains(&filter))
        };
        let mut rows = Vec::new();
        let mut work: Vec<(&TreeNode, usize)> = self.roots.iter().rev().map(|r| (r, 0)).collect();
        while let Some((n, depth)) = work.pop() {
            let expanded = !self.collapsed.contains(n.id.as_str());
            if matches(n) {
                rows.push(Row {
                    depth: if filter.is_empty() { depth } else { 0 },
                    id: n.id.clone(),
                    name: n.name.clone(),
                    state: n.state.clone(),
                    waiting_on: n.waiting_on.clone(),
                    waiting_s: n.waiting_s,
                    has_children: !n.children.is_empty(),
                    expanded,
                    cycle: n.cycle || in_cycle.contains(n.id.as_str()),
                    shown_elsewhere: n.shown_elsewhere,
                    in_finding: marked.contains(n.id.as_str()),
                });
            }
            // With a filter every match is listed flat, so descend regardless of collapse.
            if expanded || !filter.is_empty() {
                for c in n.children.iter().rev() {
                    work.push((c, depth + 1));
                }
            }
        }
        self.rows = rows;
        if let Some(sel) = self.selected_task.clone() {
            if let Some(i) = self.rows.iter().position(|r| r.id == sel) {
                self.task_cursor = i;
            }
        }
        self.task_cursor = self.task_cursor.min(self.rows.len().saturating_sub(1));
        self.selected_task = self.rows.get(self.task_cursor).map(|r| r.id.to_string());
    }

    pub fn move_cursor(&mut self, delta: i64) {
        match self.focus {
            Pane::Tasks => {
                if self.rows.is_empty() {
                    return;
                }
                let n = self.rows.len() as i64;
                self.task_cursor = (self.task_cursor as i64 + delta).clamp(0, n - 1) as usize;
                self.selected_task = Some(self.rows[self.task_cursor].id.to_string());
            }
            Pane::Threads => {
                let n = self.snapshot.as_ref().map(|s| s.threads.len()).unwrap_or(0) as i64;
                if n > 0 {
                    self.thread_cursor = (self.thread_cursor as i64 + delta).clamp(0, n - 1) as usize;
                }
            }
        }
    }

    /// Keep the cursor inside a window of `height` rows; returns the first visible row.
    pub fn scroll_to_cursor(&mut self, height: usize) -> usize {
        if height == 0 {
            return 0;
        }
        if self.task_cursor < self.task_offset {
            self.task_offset = self.task_cursor;
        } else if self.task_cursor >= self.task_offset + height {
            self.task_offset = self.task_cursor + 1 - height;
        }
        self.task_offset = self.task_offset.min(self.rows.len().saturating_sub(1));
        self.task_offset
    }

    pub fn toggle_expand(&mut self) {
        if let Some(id) = self.selected_task.clone() {
            if !self.collapsed.remove(&id) {
                self.collapsed.insert(id);
            }
            self.rebuild_rows();
        }
    }

    /// Handle one key; `code` is a simplified key name ("up", "enter", "char:x", "ctrl-c", ...).
    pub fn key(&mut self, code: &str) -> Action {
        if self.editing_filter {
            match code {
                "enter" => self.editing_filter = false,
                "esc" => {
                    self.editing_filter = false;
                    self.filter.clear();
                    self.rebuild_rows();
                }
                "backspace" => {
                    self.filter.pop();
                    self.rebuild_rows();
                }
                c if c.starts_with("char:") => {
                    self.filter.push_str(&c[5..]);
                    self.rebuild_rows();
                }
                "ctrl-c" => self.quit = true,
                _ => {}
            }
            return Action::None;
        }
        if self.show_help {
            self.show_help = false;
            if matches!(code, "char:q" | "ctrl-c") {
                self.quit = true;
            }
            return Action::None;
        }
        match code {
            "char:q" | "esc" | "ctrl-c" => self.quit = true,
            "up" | "char:k" => self.move_cursor(-1),
            "down" | "char:j" => self.move_cursor(1),
            "pageup" => self.move_cursor(-20),
            "pagedown" => self.move_cursor(20),
            "home" => self.move_cursor(-(1 << 30)),
            "end" => self.move_cursor(1 << 30),
            "enter" | "char: " => {
                if self.focus == Pane::Tasks {
                    self.toggle_expand()
                }
            }
            "tab" => self.focus = if self.focus == Pane::Tasks { Pane::Threads } else { Pane::Tasks },
            "char:/" => {
                self.editing_filter = true;
                self.focus = Pane::Tasks;
            }
            "char:p" => {
                self.paused = !self.paused;
                self.status = if self.paused {
                    "paused: view frozen, sampling continues in the background (p to resume)".into()
                } else {
                    "resumed".into()
                };
            }
            "char:s" => return Action::Save,
            "char:]" | "char:>" => self.switch_process(1),
            "char:[" | "char:<" => self.switch_process(-1),
            "char:?" => self.show_help = true,
            _ => {}
        }
        Action::None
    }

    pub fn selected_thread(&self) -> Option<&crate::model::ThreadSnap> {
        self.snapshot.as_ref()?.threads.get(self.thread_cursor)
    }

    pub fn selected_task_snap(&self) -> Option<&crate::model::TaskSnap> {
        let id = self.selected_task.as_ref()?;
        self.snapshot.as_ref()?.tasks.iter().find(|t| &t.id == id)
    }

    pub fn cycles(&self) -> &[Vec<String>] {
        &self.cycles
    }
}

fn push(q: &mut VecDeque<u64>, v: u64) {
    q.push_back(v);
    while q.len() > HISTORY {
        q.pop_front();
    }
}
