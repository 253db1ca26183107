//! The load generator's modules import one way (the table in `lib.rs`'s
//! "Layering"): this test reads every source file under `src/` and fails on
//! an import of a module that its module may not import, naming the file
//! and the line. Doc comments are not imports and are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the modules right below it (lib.rs's table):
/// it may import those and, transitively, whatever they may import. Each
/// names only modules listed before it, so the layering has no cycle.
const BELOW: &[(&str, &[&str])] = &[
    ("scenario", &[]),
    ("local_server", &[]),
    ("metrics", &["scenario"]),
    ("client", &["metrics"]),
    ("runner", &["client"]),
    ("summary", &["metrics"]),
    ("analysis", &["summary"]),
    ("report", &["analysis"]),
    ("history", &["report"]),
    ("live", &["summary"]),
    ("run", &["history", "runner", "local_server", "live"]),
    ("ab", &["run"]),
    ("agent", &["runner"]),
    ("cli", &["ab", "agent"]),
];

/// What each module may import: the closure of [`BELOW`].
fn may_import() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let mut may: BTreeMap<&'static str, BTreeSet<&'static str>> = BTreeMap::new();
    for (module, below) in BELOW {
        let mut all = BTreeSet::new();
        for lower in *below {
            all.insert(*lower);
            all.extend(may.get(lower).into_iter().flatten().copied());
        }
        may.insert(module, all);
    }
    may
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The top-level module `file` belongs to (`runner` for
/// `src/runner/worker.rs`), or `None` for the crate root and `main.rs`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).expect("under src/");
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The crate modules `code` names (`crate::NAME`, or each name of a group
/// `crate::{A, B::C}`), with the line each is on. Comments are left out.
fn named(code: &str) -> Vec<(usize, String)> {
    let code: String = code
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        // `streamgauge_loadgen::` or `other_crate::` is not this crate.
        if code[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let end = group
                .find(|c: char| {
                    depth += i32::from(c == '{') - i32::from(c == '}');
                    depth < 0
                })
                .unwrap_or(group.len());
            let mut depth = 0;
            for item in group[..end].split(|c: char| {
                depth += i32::from(c == '{') - i32::from(c == '}');
                c == ',' && depth == 0
            }) {
                names.extend(first_name(item).map(|name| (line_of(at), name)));
            }
        } else {
            names.extend(first_name(rest).map(|name| (line_of(at), name)));
        }
    }
    names
}

/// The identifier `path` starts with, past white space.
fn first_name(path: &str) -> Option<String> {
    let path = path.trim_start();
    let end = path
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(path.len());
    (end > 0).then(|| path[..end].to_owned())
}

/// The imports of every module: for each, the modules it names, with where.
fn imports(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut found: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("a source file");
        for (line, target) in named(&text) {
            if target != module {
                found
                    .entry(module.clone())
                    .or_default()
                    .insert(target, format!("{}:{line}", file.display()));
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_what_the_layering_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed = may_import();
    let mut wrong = Vec::new();
    for (module, targets) in imports(&src) {
        let Some(may) = allowed.get(module.as_str()) else {
            wrong.push(format!(
                "{module}: not in the layering table (lib.rs and this test)"
            ));
            continue;
        };
        for (target, at) in targets {
            if !may.contains(target.as_str()) {
                wrong.push(format!("{module} may not import {target}: {at}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_layering_itself_has_no_cycle() {
    // Each module names only modules listed before it.
    for (i, (module, below)) in BELOW.iter().enumerate() {
        for target in *below {
            let position = BELOW.iter().position(|(m, _)| m == target);
            assert!(
                position.is_some_and(|p| p < i),
                "{module} is above {target}, which is not listed before it"
            );
        }
    }
}

#[test]
fn the_scanner_sees_imports_and_passes_over_comments_and_other_crates() {
    let names = |code: &str| -> Vec<String> { named(code).into_iter().map(|(_, n)| n).collect() };
    assert_eq!(
        names("use crate::summary::{Report, Summary}; let x = crate::run::run_id();"),
        ["summary", "run"]
    );
    assert_eq!(
        names("use crate::{\n    report::{files, text},\n    analysis,\n};"),
        ["report", "analysis"]
    );
    assert_eq!(named("x\nuse crate::ab;")[0].0, 2);
    assert!(names("    //! see [`stats`](crate::analysis::stats)").is_empty());
    assert!(names("let a = 1; // crate::report").is_empty());
    assert!(names("use streamgauge_loadgen::runner::worker;").is_empty());
}
