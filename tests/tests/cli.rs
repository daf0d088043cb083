//! The command line as a Unix tool: output piped into a reader that leaves early (`| head`).

use std::process::Stdio;

use clawlink_tests::*;

#[test]
fn a_reader_that_leaves_early_ends_the_listing_quietly() {
    let dir = scratch_dir("cli-sigpipe");
    let mut child = clawlink_command(&dir)
        .arg("features")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before the first line is written.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            // 13 = SIGPIPE
            output.status.success() || output.status.signal() == Some(13),
            "{:?}: {stderr}",
            output.status
        );
    }
}
