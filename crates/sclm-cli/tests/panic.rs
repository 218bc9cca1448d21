//! A panic (a bug) reaches the user as one line, without a backtrace hint.
use std::process::Command;

#[test]
fn a_panic_prints_one_line_and_fails() {
    let o = Command::new(env!("CARGO_BIN_EXE_sclm"))
        .args(["info", "nothing.h5ad"])
        .env("SCLM_TEST_PANIC", "1")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("error: internal error"), "{err}");
    assert!(lines[0].contains("deliberate panic for the panic-hook test"), "{err}");
    assert!(!err.contains("backtrace") && !err.contains("panicked at"), "{err}");
}
