//! docs/cli.md against the command lines it documents: every flag and
//! argument that `--help` shows, on every command of `streamgauge-server`
//! and `streamgauge-loadgen`, is in that program's section of the page;
//! every command has its heading there; and every flag the page's tables
//! list exists. The page cannot drift from the clap definitions.
//!
//! Test with `cargo test -p streamgauge-loadgen --test docs`.

use std::collections::BTreeSet;

use clap::CommandFactory as _;

/// The page under test.
const CLI_MD: &str = include_str!("../../docs/cli.md");

/// The part of docs/cli.md under `## {heading}`, up to the next `## `.
fn section(heading: &str) -> &'static str {
    let start = CLI_MD
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("docs/cli.md has no `## {heading}` section"));
    let body = &CLI_MD[start + heading.len() + 5..];
    body.find("\n## ").map_or(body, |end| &body[..end])
}

/// What `--help` shows of a program, over all its commands.
#[derive(Debug, Default)]
struct Shown {
    /// Its commands, by name (the program itself not included).
    commands: BTreeSet<String>,
    /// Its flags' long names, without `--`.
    flags: BTreeSet<String>,
    /// Its positional arguments' value names (`CURRENT`).
    positionals: BTreeSet<String>,
}

impl Shown {
    /// What the help of `program` and of each of its commands shows.
    fn of(mut program: clap::Command) -> Self {
        // Building propagates global flags and adds `--help` and `--version`.
        program.build();
        let mut shown = Self::default();
        shown.add(&program);
        for command in program.get_subcommands() {
            // clap's own `help` command takes no flags of ours.
            if command.get_name() != "help" && !command.is_hide_set() {
                shown.commands.insert(command.get_name().to_owned());
                shown.add(command);
            }
        }
        shown
    }

    fn add(&mut self, command: &clap::Command) {
        for arg in command.get_arguments().filter(|arg| !arg.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                self.flags.insert(long.to_owned());
            } else if arg.is_positional() {
                let names = arg.get_value_names().unwrap_or_default();
                self.positionals
                    .extend(names.iter().map(|name| name.to_string()));
            }
        }
    }
}

/// Whether `text` names `--flag` in backquotes, alone or with its value.
fn mentions(text: &str, flag: &str) -> bool {
    let quoted = format!("`--{flag}");
    text.match_indices(&quoted).any(|(at, _)| {
        let next = text[at + quoted.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// The flags the tables of `text` list: the first `--flag` of each row.
fn tabled_flags(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("| `--"))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect()
        })
        .collect()
}

/// What is wrong with the section of docs/cli.md that documents `program`.
fn drift(program: clap::Command) -> Vec<String> {
    let name = program.get_name().to_owned();
    let doc = section(&name);
    let shown = Shown::of(program);
    let mut wrong = Vec::new();
    for command in &shown.commands {
        if !doc.contains(&format!("\n### `{command}`\n")) {
            wrong.push(format!("{name}: no heading ### `{command}`"));
        }
    }
    for flag in &shown.flags {
        if !mentions(doc, flag) {
            wrong.push(format!("{name}: --{flag} is not documented"));
        }
    }
    for positional in &shown.positionals {
        if !doc.contains(positional.as_str()) {
            wrong.push(format!(
                "{name}: the argument {positional} is not documented"
            ));
        }
    }
    for flag in tabled_flags(doc).difference(&shown.flags) {
        wrong.push(format!("{name}: --{flag} is documented but does not exist"));
    }
    wrong
}

#[test]
fn every_flag_that_help_shows_is_documented_in_cli_md_and_nothing_else() {
    let mut wrong = drift(streamgauge_server::config::Args::command());
    wrong.extend(drift(streamgauge_loadgen::cli::Cli::command()));
    assert!(
        wrong.is_empty(),
        "docs/cli.md does not match the command lines:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_every_command_and_flag_of_both_programs() {
    let server = Shown::of(streamgauge_server::config::Args::command());
    let loadgen = Shown::of(streamgauge_loadgen::cli::Cli::command());
    assert!(server.commands.is_empty());
    for flag in ["listen", "database", "max-connections", "help", "version"] {
        assert!(server.flags.contains(flag), "{flag}: {server:?}");
    }
    for command in [
        "ab", "capacity", "compare", "history", "presets", "run", "suite",
    ] {
        assert!(loadgen.commands.contains(command), "{command}: {loadgen:?}");
    }
    assert!(!loadgen.commands.contains("help"), "clap's own is left out");
    for flag in ["log", "preset", "url", "quick", "base", "limit", "history"] {
        assert!(loadgen.flags.contains(flag), "{flag}: {loadgen:?}");
    }
    assert!(loadgen.positionals.contains("BASELINE"), "{loadgen:?}");
    assert!(mentions("| `--max-batch N` |", "max-batch"));
    assert!(!mentions("| `--max-batch-bytes` |", "max-batch"));
    assert_eq!(
        tabled_flags("| `--help`, `-h` |\n| `--out DIR` | x |\ntext `--no`"),
        BTreeSet::from(["help".to_owned(), "out".to_owned()])
    );
}
