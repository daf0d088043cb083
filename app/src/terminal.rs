//! Human output that carries the gateway's or the SSH host's text: `println!`/`eprintln!` whose
//! formatted line goes through `clawlink_core::text::terminal_safe` first.
//!
//! A sink prints with these instead of the std macros wherever an argument may come from the
//! remote side; its own format string then cannot be forged or recoloured by that text (see
//! `clawlink_core::text` for what is filtered). `--json` output keeps the std macros: JSON
//! escaping already makes every character inert, and it must stay exact.

/// `println!` for one line of human output that may carry remote text.
macro_rules! println_safe {
    ($($arg:tt)*) => {
        println!("{}", clawlink_core::text::terminal_safe(&format!($($arg)*)))
    };
}

/// `eprintln!` for one line of human output that may carry remote text.
macro_rules! eprintln_safe {
    ($($arg:tt)*) => {
        eprintln!("{}", clawlink_core::text::terminal_safe(&format!($($arg)*)))
    };
}

pub(crate) use eprintln_safe;
pub(crate) use println_safe;
