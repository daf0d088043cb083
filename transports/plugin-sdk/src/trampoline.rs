//! The `extern "C"` functions in the table: they turn raw host pointers into Rust values, call the plugin inside `catch_unwind`, and write results back without ever overrunning the host's buffers.

use std::borrow::Cow;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::Value;

use crate::abi::CLAWLINK_OK;
use crate::{PluginError, TransportPlugin};

/// `connect` for plugin `P`.
///
/// # Safety
/// The host passes `settings_json` valid for `settings_len` bytes (or NULL), and `out_fd`,
/// `err_buf` (for `err_cap` bytes) and `err_len` writable or NULL, all for the call only.
pub(crate) unsafe extern "C" fn connect<P: TransportPlugin>(
    settings_json: *const u8,
    settings_len: usize,
    out_fd: *mut i32,
    err_buf: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
) -> i32 {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        hand_over_fd(
            settings_json,
            settings_len,
            out_fd,
            err_buf,
            err_cap,
            err_len,
            |settings| P::connect(settings),
        )
    }
}

/// `connect_port` for plugin `P` (only in the table when `P::PORTS` is `Some`).
///
/// # Safety
/// As [`connect`].
pub(crate) unsafe extern "C" fn connect_port<P: TransportPlugin>(
    settings_json: *const u8,
    settings_len: usize,
    port: u16,
    out_fd: *mut i32,
    err_buf: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
) -> i32 {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        hand_over_fd(
            settings_json,
            settings_len,
            out_fd,
            err_buf,
            err_cap,
            err_len,
            |settings| match P::PORTS {
                Some(ports) => (ports.connect_port)(settings, port),
                None => Err(PluginError::connect(
                    "this plugin does not open other ports",
                )),
            },
        )
    }
}

/// `gateway_port` for plugin `P`: 0 (which the host reports) when the settings do not parse,
/// the plugin fails or panics.
///
/// # Safety
/// `settings_json` is NULL or valid for `settings_len` bytes for the call.
pub(crate) unsafe extern "C" fn gateway_port<P: TransportPlugin>(
    settings_json: *const u8,
    settings_len: usize,
) -> u16 {
    let result = guarded(|| {
        // SAFETY: forwarded from this function's contract.
        let settings = unsafe { parse_settings(settings_json, settings_len) }?;
        match P::PORTS {
            Some(ports) => (ports.gateway_port)(&settings),
            None => Ok(0),
        }
    });
    result.unwrap_or(0)
}

/// The body of every fd-returning call: parse, run `open` guarded, and on success give the
/// fd's ownership to the host; otherwise write the message and return the error's code.
///
/// # Safety
/// As [`connect`].
unsafe fn hand_over_fd(
    settings_json: *const u8,
    settings_len: usize,
    out_fd: *mut i32,
    err_buf: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
    open: impl FnOnce(&Value) -> Result<OwnedFd, PluginError>,
) -> i32 {
    let result = guarded(|| {
        // Without a place to put the fd the connection would leak: refuse before dialling.
        if out_fd.is_null() {
            return Err(PluginError::config(
                "clawlink passed a null out_fd to connect (a host bug)",
            ));
        }
        // SAFETY: forwarded from this function's contract.
        let settings = unsafe { parse_settings(settings_json, settings_len) }?;
        open(&settings)
    });
    match result {
        Ok(fd) => {
            // SAFETY: checked non-null above; the host owns the fd from here on.
            unsafe { *out_fd = fd.into_raw_fd() };
            // SAFETY: forwarded from this function's contract.
            unsafe { write_text(err_buf, err_cap, err_len, "") };
            CLAWLINK_OK
        }
        Err(error) => {
            // SAFETY: forwarded from this function's contract.
            unsafe { write_text(err_buf, err_cap, err_len, &error.message) };
            error.code.as_raw()
        }
    }
}

/// `check_settings` for plugin `P` (only in the table when `P::CHECK_SETTINGS` is `Some`).
///
/// # Safety
/// As [`connect`], without `out_fd`.
pub(crate) unsafe extern "C" fn check_settings<P: TransportPlugin>(
    settings_json: *const u8,
    settings_len: usize,
    err_buf: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
) -> i32 {
    let result = guarded(|| {
        // SAFETY: forwarded from this function's contract.
        let settings = unsafe { parse_settings(settings_json, settings_len) }?;
        match P::CHECK_SETTINGS {
            Some(check) => check(&settings),
            // The table only points here when the plugin has the function; keep the answer
            // honest anyway rather than claiming the settings were checked.
            None => Err(PluginError::config("this plugin does not check settings")),
        }
    });
    let text = match &result {
        Ok(()) => "",
        Err(error) => error.message.as_str(),
    };
    // SAFETY: forwarded from this function's contract.
    unsafe { write_text(err_buf, err_cap, err_len, text) };
    match result {
        Ok(()) => CLAWLINK_OK,
        Err(error) => error.code.as_raw(),
    }
}

/// `describe` for plugin `P` (only in the table when `P::DESCRIBE` is `Some`).
///
/// On failure the error message goes into the buffer too; the host describes the transport
/// itself whenever the result is not `CLAWLINK_OK`.
///
/// # Safety
/// As [`check_settings`], with the output buffer in place of the error buffer.
pub(crate) unsafe extern "C" fn describe<P: TransportPlugin>(
    settings_json: *const u8,
    settings_len: usize,
    out_buf: *mut u8,
    out_cap: usize,
    out_len: *mut usize,
) -> i32 {
    let result = guarded(|| {
        // SAFETY: forwarded from this function's contract.
        let settings = unsafe { parse_settings(settings_json, settings_len) }?;
        match P::DESCRIBE {
            Some(describe) => describe(&settings),
            None => Err(PluginError::connect(
                "this plugin does not describe settings",
            )),
        }
    });
    let (code, text) = match &result {
        Ok(line) => (CLAWLINK_OK, line.as_str()),
        Err(error) => (error.code.as_raw(), error.message.as_str()),
    };
    // SAFETY: forwarded from this function's contract.
    unsafe { write_text(out_buf, out_cap, out_len, text) };
    code
}

/// Runs plugin code so that a panic becomes an error instead of unwinding into C, which
/// would abort the host process (an `extern "C"` function may not unwind).
///
/// This only works when the plugin is built with `panic = "unwind"` (cargo's default); with
/// `panic = "abort"` a panic ends the host process.
pub(crate) fn guarded<T>(body: impl FnOnce() -> Result<T, PluginError>) -> Result<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => {
            let message = if let Some(text) = payload.downcast_ref::<&str>() {
                (*text).to_owned()
            } else if let Some(text) = payload.downcast_ref::<String>() {
                text.clone()
            } else {
                "a panic without a message".to_owned()
            };
            Err(PluginError::connect(format!("plugin panicked: {message}")))
        }
    }
}

/// The settings the host passed, as a JSON object; anything else is `CLAWLINK_ERR_CONFIG`.
///
/// # Safety
/// `ptr` is NULL or valid for reads of `len` bytes for the duration of the call.
pub(crate) unsafe fn parse_settings(ptr: *const u8, len: usize) -> Result<Value, PluginError> {
    if ptr.is_null() {
        return Err(PluginError::config(
            "clawlink passed no settings (a null pointer) to the plugin",
        ));
    }
    if len > isize::MAX as usize {
        return Err(PluginError::config(
            "the settings length is impossibly large",
        ));
    }
    // SAFETY: non-null, and the caller guarantees `len` readable bytes; len ≤ isize::MAX.
    let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| PluginError::config(format!("the settings are not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(PluginError::config(format!(
            "the settings must be a JSON object (the transport's settings table), not {}",
            kind(&value)
        )));
    }
    Ok(value)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Writes `text` as one line into the host's buffer: at most `cap` bytes, cut back to a UTF-8
/// character boundary so the host never receives half a character, and the count in `*len`.
///
/// A NULL `buf` (or `cap` 0) writes nothing and reports 0; a NULL `len` still writes, since
/// the host may only want the text, but cannot report how much.
///
/// # Safety
/// `buf` is NULL or writable for `cap` bytes; `len` is NULL or writable.
pub(crate) unsafe fn write_text(buf: *mut u8, cap: usize, len: *mut usize, text: &str) {
    let text = one_line(text);
    let written = if buf.is_null() {
        0
    } else {
        let mut n = cap.min(text.len());
        while !text.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: `buf` is writable for `cap` ≥ n bytes and cannot overlap our own string.
        unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf, n) };
        n
    };
    if !len.is_null() {
        // SAFETY: non-null and writable by the caller's contract.
        unsafe { *len = written };
    }
}

/// The header asks for one line; a panic message or an OS error may carry line breaks.
fn one_line(text: &str) -> Cow<'_, str> {
    if text.contains(['\n', '\r']) {
        Cow::Owned(text.replace("\r\n", " ").replace(['\n', '\r'], " "))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(cap: usize, text: &str) -> (Vec<u8>, usize) {
        let mut buf = vec![0xAAu8; cap + 4];
        let mut len = usize::MAX;
        // SAFETY: buf has cap + 4 bytes; len is a local.
        unsafe { write_text(buf.as_mut_ptr(), cap, &mut len, text) };
        // Nothing past `cap` may be touched: the guard bytes keep their value.
        assert!(
            buf[cap..].iter().all(|&b| b == 0xAA),
            "wrote past cap {cap}"
        );
        buf.truncate(len);
        (buf, len)
    }

    #[test]
    fn truncation_stops_at_a_character_boundary() {
        // "é" is two bytes, "→" three: caps that fall inside them must back off.
        let text = "ab é → x";
        assert_eq!(written(3, text), (b"ab ".to_vec(), 3));
        assert_eq!(written(4, text), (b"ab ".to_vec(), 3));
        assert_eq!(written(5, text), ("ab é".as_bytes().to_vec(), 5));
        assert_eq!(written(6, text), ("ab é ".as_bytes().to_vec(), 6));
        assert_eq!(written(7, text), ("ab é ".as_bytes().to_vec(), 6));
        assert_eq!(written(8, text), ("ab é ".as_bytes().to_vec(), 6));
        assert_eq!(written(9, text), ("ab é →".as_bytes().to_vec(), 9));
        assert_eq!(written(100, text), (text.as_bytes().to_vec(), text.len()));
        for cap in 0..=text.len() {
            let (bytes, _) = written(cap, text);
            assert!(std::str::from_utf8(&bytes).is_ok(), "cap {cap}");
        }
    }

    #[test]
    fn a_four_byte_character_is_never_split() {
        let text = "🦀";
        for cap in 0..4 {
            assert_eq!(written(cap, text), (Vec::new(), 0));
        }
        assert_eq!(written(4, text), (text.as_bytes().to_vec(), 4));
    }

    #[test]
    fn zero_capacity_and_null_pointers_write_nothing() {
        assert_eq!(written(0, "hello"), (Vec::new(), 0));
        let mut len = 7usize;
        // SAFETY: a null buffer is allowed; len is a local.
        unsafe { write_text(std::ptr::null_mut(), 10, &mut len, "hello") };
        assert_eq!(len, 0);
        let mut buf = [0u8; 8];
        // SAFETY: buf has 8 bytes; a null len is allowed.
        unsafe { write_text(buf.as_mut_ptr(), buf.len(), std::ptr::null_mut(), "hello") };
        assert_eq!(&buf[..5], b"hello");
        // SAFETY: both null: nothing is touched.
        unsafe { write_text(std::ptr::null_mut(), 10, std::ptr::null_mut(), "hello") };
    }

    #[test]
    fn line_breaks_are_folded() {
        assert_eq!(written(100, "a\nb\r\nc\rd").0, b"a b c d".to_vec());
    }

    #[test]
    fn settings_must_be_a_json_object() {
        // SAFETY: each pointer is valid for its length.
        unsafe {
            let e = parse_settings(std::ptr::null(), 0).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::Config);
            let e = parse_settings(b"{".as_ptr(), 1).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::Config);
            assert!(e.message.contains("not valid JSON"), "{}", e.message);
            let e = parse_settings(b"[1]".as_ptr(), 3).unwrap_err();
            assert!(e.message.contains("not an array"), "{}", e.message);
            let ok = parse_settings(b"{\"a\":1}xyz".as_ptr(), 7).unwrap();
            assert_eq!(ok["a"], 1);
        }
    }

    #[test]
    fn panics_become_connect_errors() {
        let e = guarded::<()>(|| panic!("boom {}", 42)).unwrap_err();
        assert_eq!(e, PluginError::connect("plugin panicked: boom 42"));
        let e = guarded::<()>(|| panic!("static")).unwrap_err();
        assert_eq!(e.message, "plugin panicked: static");
        let e = guarded::<()>(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(e.message, "plugin panicked: a panic without a message");
    }
}
