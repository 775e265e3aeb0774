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
            // Both formats have a fixed width: the writes always fit.
            let _ = write!(&mut now.http[..], "{}", HttpDate::from(at));
            let _ = write_clf(&mut &mut now.clf[..], second);
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

/// Writes `unix_seconds` as `dd/Mon/yyyy:HH:MM:SS +0000`.
fn write_clf(out: &mut impl Write, unix_seconds: u64) -> std::io::Result<()> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_seconds / 86_400;
    let in_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    write!(
        out,
        "{day:02}/{}/{year:04}:{:02}:{:02}:{:02} +0000",
        MONTHS[month as usize - 1],
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

/// The (year, month 1–12, day 1–31) of a day counted from 1970-01-01, in
/// the proleptic Gregorian calendar: eras of 400 years of 146,097 days,
/// years counted from March so that the leap day ends the year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clf(seconds: u64) -> String {
        let mut out = Vec::new();
        write_clf(&mut out, seconds).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn common_log_format_dates() {
        assert_eq!(clf(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(clf(784_111_777), "06/Nov/1994:08:49:37 +0000");
        assert_eq!(clf(951_782_400), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(clf(4_107_542_399), "28/Feb/2100:23:59:59 +0000");
        assert_eq!(clf(4_133_980_799), "31/Dec/2100:23:59:59 +0000");
        assert_eq!(clf(1_795_996_800).len(), 26);
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
