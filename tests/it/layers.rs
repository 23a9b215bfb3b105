//! The import direction of the library, checked on its sources: every top-level module has
//! a rank, and a module names only modules of a lower rank (`crate::X` outside comments).
//! The same rule by hand: `grep -rn 'crate::report' src/stage` prints nothing, and so on
//! down the table. See the README's layout section.

use std::collections::BTreeMap;
use std::path::Path;

/// Ranks, bottom up. The pure models (forecast, detect) sit just above time, so they
/// cannot name the lake, rollups or billing; the two faces (cli, serve) and the jobs sit
/// on top; nothing names the cli.
const RANKS: [(&str, f64); 21] = [
    ("error", 0.0),
    ("fault", 0.5),
    ("memory", 0.5),
    ("time", 1.0),
    ("http", 1.5),
    ("event", 2.0),
    ("forecast", 2.0),
    ("generate", 2.0),
    ("detect", 2.5),
    ("lake", 3.0),
    ("ingest", 4.0),
    ("rollup", 4.0),
    ("usage", 5.0),
    ("series", 5.0),
    ("billing", 6.0),
    ("stage", 7.0),
    ("report", 8.0),
    ("config", 9.0),
    ("job", 9.5),
    ("serve", 9.5),
    ("cli", 10.0),
];

/// A source text without its comments.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a source text names as `crate::NAME` or `crate::{A, B::..}`,
/// comments removed.
fn named(text: &str) -> Vec<String> {
    let code = code(text);
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        match rest.strip_prefix('{') {
            // Top-level items of the group: split at commas outside nested braces.
            Some(group) => {
                let (mut depth, mut start) = (0, 0);
                for (j, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            names.push(ident(&group[start..j]));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            names.push(ident(&group[start..j]));
                            start = j + 1;
                        }
                        _ => {}
                    }
                }
            }
            None => names.push(ident(rest)),
        }
    }
    names
        .into_iter()
        .filter(|n| !n.is_empty())
        .map(|n| match n.as_str() {
            "Error" | "Result" => "error".to_string(),
            _ => n,
        })
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn imports_run_down_the_layers_only() {
    let ranks: BTreeMap<&str, f64> = RANKS.into_iter().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let top = rel.split('/').next().unwrap().trim_end_matches(".rs");
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(&own) = ranks.get(top) else {
            panic!("{rel}: module `{top}` has no rank in RANKS: give it one");
        };
        for n in named(&std::fs::read_to_string(f).unwrap()) {
            if n == top {
                continue;
            }
            match ranks.get(n.as_str()) {
                Some(&r) if r < own => {}
                Some(_) => wrong.push(format!("{rel} names crate::{n}")),
                None => wrong.push(format!("{rel} names crate::{n}, which has no rank")),
            }
        }
    }
    assert!(files.len() > 50, "read {} files", files.len());
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

/// Inside the stages, the derived tables sit below the stages that write them.
#[test]
fn derived_tables_name_no_stage() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/stage/tables");
    let mut files = Vec::new();
    sources(&dir, &mut files);
    assert!(files.len() >= 5);
    for f in files {
        let text = code(&std::fs::read_to_string(&f).unwrap());
        for stage in ["forecast", "anomalies", "quotas", "alerts"] {
            assert!(
                !text.contains(&format!("crate::stage::{stage}"))
                    && !text.contains(&format!("super::super::{stage}")),
                "{} names the {stage} stage",
                f.display()
            );
        }
    }
}

#[test]
fn the_checker_sees_an_upward_import() {
    assert_eq!(
        named(
            "use crate::report::Table; // crate::cli\nlet x = crate::Result::Ok(1);\n\
             use crate::{ingest, lake::{Lake, stats}, time};"
        ),
        ["report", "error", "ingest", "lake", "time"]
    );
}
