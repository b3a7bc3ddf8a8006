//! Command-line contract: usage errors exit 2 with one clear line.

mod common;

use common::run_tapline;

#[test]
fn unknown_flag_exits_2() {
    let (code, _, err) = run_tapline(&["proxy", "--no-such-flag"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
}

#[test]
fn bad_duration_names_the_flag() {
    let (code, _, err) = run_tapline(&["proxy", "--plugin-timeout", "soon"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--plugin-timeout"), "{err}");
}

#[test]
fn help_lists_subcommands() {
    let (code, out, _) = run_tapline(&["--help"]);
    assert_eq!(code, 0);
    for sub in ["proxy", "capture", "demo", "plugins"] {
        assert!(out.contains(sub), "{out}");
    }
}
