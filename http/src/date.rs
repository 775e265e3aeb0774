//! Dates as HTTP and access logs write them, the current one formatted
//! once a second per loop (thread) rather than once per response.

use std::cell::RefCell;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use httpdate::HttpDate;

/// The current second, formatted both ways.
struct Now {
    second: u64,
    /// IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
    http: [u8; 29],
    /// Common Log Format: `06/Nov/1994:08:49:37 +0000`.
    clf: [u8; 26],
}

thread_local! {
    static NOW: RefCell<Now> = const {
        RefCell::new(Now { second: u64::MAX, http: [0; 29], clf: [0; 26] })
    };
}

/// Runs `f` on the current second's formatted dates.
fn with_now<R>(f: impl FnOnce(&Now) -> R) -> R {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let second = since_epoch.as_secs();
    NOW.with_borrow_mut(|now| {
        if now.second != second {
            now.second = second;
            let at = UNIX_EPOCH + Duration::from_secs(second);
            // A fixed width: the write always fits.
            let _ = write!(&mut now.http[..], "{}", HttpDate::from(at));
            now.clf = clf_from_http(&now.http);
        }
        f(now)
    })
}

/// Appends the `Date` header line for now.
pub(crate) fn write_date_header(out: &mut Vec<u8>) {
    with_now(|now| {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(&now.http);
        out.extend_from_slice(b"\r\n");
    });
}

/// Appends now as the Common Log Format writes it, without brackets.
pub(crate) fn write_log_time(out: &mut Vec<u8>) {
    with_now(|now| out.extend_from_slice(&now.clf));
}

/// The current second since the epoch (the one the `Date` header shows).
pub(crate) fn now() -> i64 {
    with_now(|now| i64::try_from(now.second).unwrap_or(i64::MAX))
}

/// A file's modification time as HTTP writes it (whole seconds).
pub(crate) fn http_date(unix_seconds: i64) -> HttpDate {
    let seconds = u64::try_from(unix_seconds).unwrap_or(0);
    HttpDate::from(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// The seconds since the epoch an HTTP date names, if it is one.
pub(crate) fn parse_http_date(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    let seconds = time.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(seconds).ok()
}

/// The Common Log Format's `dd/Mon/yyyy:HH:MM:SS +0000` from the same
/// instant as an IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`: the same
/// fields in another order.
fn clf_from_http(http: &[u8; 29]) -> [u8; 26] {
    let mut clf = *b"dd/Mon/yyyy:HH:MM:SS +0000";
    clf[0..2].copy_from_slice(&http[5..7]);
    clf[3..6].copy_from_slice(&http[8..11]);
    clf[7..11].copy_from_slice(&http[12..16]);
    clf[12..20].copy_from_slice(&http[17..25]);
    clf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clf(seconds: u64) -> String {
        let mut http = [0u8; 29];
        let at = UNIX_EPOCH + Duration::from_secs(seconds);
        write!(&mut http[..], "{}", HttpDate::from(at)).unwrap();
        String::from_utf8(clf_from_http(&http).to_vec()).unwrap()
    }

    #[test]
    fn common_log_format_dates() {
        assert_eq!(clf(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(clf(784_111_777), "06/Nov/1994:08:49:37 +0000");
        assert_eq!(clf(951_782_400), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(clf(4_107_542_399), "28/Feb/2100:23:59:59 +0000");
        assert_eq!(clf(4_133_980_799), "31/Dec/2100:23:59:59 +0000");
    }

    #[test]
    fn the_date_header_is_an_imf_fixdate_of_now() {
        let mut out = Vec::new();
        write_date_header(&mut out);
        let line = std::str::from_utf8(&out).unwrap();
        let value = line
            .strip_prefix("Date: ")
            .unwrap()
            .strip_suffix("\r\n")
            .unwrap();
        let parsed = parse_http_date(value.as_bytes()).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((now - parsed).abs() <= 1, "{value}");
    }

    #[test]
    fn modification_times_round_trip() {
        let written = http_date(784_111_777).to_string();
        assert_eq!(written, "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date(written.as_bytes()), Some(784_111_777));
        assert_eq!(parse_http_date(b"yesterday"), None);
        assert_eq!(parse_http_date(b"\xff"), None);
    }
}
