//! tapline's HTTP and PostgreSQL decoding of the shared captures agrees with tshark: the same
//! SQL statements (Query and Parse texts), HTTP requests (method, URI) and response status
//! codes. Once on tshark's own reassembled streams fed to [`FlowDecoder`] (the decoders
//! alone, stream by stream, in order), once through `tapline capture -r FILE --json` (link
//! layers, reassembly and output included).

mod common;
mod decode_tshark;

use decode_tshark::{capture_files, follow_all, tshark_facts, Facts};

/// The captures hold 22 + 4 + 1 + 1 + 84 statements and 6 + 5 + 17 + 2 + 3 + 1 requests.
const STATEMENTS: usize = 112;
const REQUESTS: usize = 34;

#[test]
fn decoders_agree_with_tshark_on_every_shared_stream() {
    let Some(dir) = common::shared_pcaps() else {
        return;
    };
    if !common::have("tshark") {
        return;
    }
    let files = capture_files(&dir);
    assert!(files.len() >= 10, "expected the shared captures in {dir:?}");
    let (mut statements, mut requests) = (0, 0);
    for file in &files {
        let mut facts = tshark_facts(file, &[]);
        for (n, stream) in follow_all(file) {
            let want = facts.remove(&n).unwrap_or_default();
            assert_eq!(
                stream.decode(),
                want,
                "{} stream {n}: tapline (left) and tshark (right) disagree",
                file.display()
            );
            statements += want.sql.len();
            requests += want.requests.len();
        }
        assert!(
            facts.is_empty(),
            "{}: streams not followed: {facts:?}",
            file.display()
        );
    }
    assert_eq!((statements, requests), (STATEMENTS, REQUESTS));
}

#[test]
fn capture_agrees_with_tshark_on_every_shared_capture() {
    let Some(dir) = common::shared_pcaps() else {
        return;
    };
    if !common::have("tshark") {
        return;
    }
    let (mut statements, mut requests) = (0, 0);
    for file in capture_files(&dir) {
        let (code, stdout, stderr) =
            common::run_tapline(&["capture", "-r", file.to_str().unwrap(), "--json"]);
        let damaged = file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("broken-");
        assert!(
            code == 0 || (damaged && code == 1),
            "{}: exit {code}\n{stderr}",
            file.display()
        );
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect();
        let got = Facts::merged(Facts::from_json_lines(&lines).values());
        let want = Facts::merged(tshark_facts(&file, &[]).values());
        assert_eq!(
            got,
            want,
            "{}: tapline capture (left) and tshark (right) disagree",
            file.display()
        );
        statements += want.sql.len();
        requests += want.requests.len();
    }
    assert_eq!((statements, requests), (STATEMENTS, REQUESTS));
}
