use std::time::{SystemTime, UNIX_EPOCH};

use crate::context::Context;
use crate::service::{Action, Handler, Input};

/// Daytime (RFC 867): on connect, sends the current date and time as one
/// line, in UTC, e.g. `Sunday, November 29, 2026 16:05:18-UTC`, then
/// closes; whatever the client sends is ignored.
#[derive(Clone, Copy, Debug, Default)]
pub struct Daytime;

impl Handler for Daytime {
    fn on_open(&mut self, cx: &mut Context<'_>) -> Action {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        cx.write(daytime(now).as_bytes());
        Action::Close
    }

    fn on_data(&mut self, input: &mut Input<'_>, _cx: &mut Context<'_>) -> Action {
        input.consume_all();
        Action::Continue
    }
}

const WEEKDAYS: [&str; 7] = [
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The RFC's suggested form, `Weekday, Month Day, Year HH:MM:SS-Zone`, in
/// UTC, with CR LF, for `unix_seconds` since 1970.
fn daytime(unix_seconds: u64) -> String {
    let days = unix_seconds / 86_400;
    let secs = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {} {}, {} {:02}:{:02}:{:02}-UTC\r\n",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[month as usize - 1],
        day,
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The Gregorian (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, for days after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        assert_eq!(daytime(0), "Thursday, January 1, 1970 00:00:00-UTC\r\n");
        // 2000-02-29 (a leap day in a year divisible by 400).
        assert_eq!(
            daytime(951_782_400 + 3_723),
            "Tuesday, February 29, 2000 01:02:03-UTC\r\n"
        );
        assert_eq!(
            daytime(1_795_968_318),
            "Sunday, November 29, 2026 16:05:18-UTC\r\n"
        );
    }
}
