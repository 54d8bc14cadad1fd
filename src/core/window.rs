//! Calendar windows in UTC: the hour, the day, the week (starting Monday) and the month a moment
//! falls in. Spend is attributed to the windows current when its budget was reserved.

use time::{Date, Month, OffsetDateTime, Time};

/// The periodic windows a limit can apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// The calendar hour (UTC), from minute 0.
    Hour,
    /// The calendar day (UTC), from midnight.
    Day,
    /// The week (UTC), from Monday midnight.
    Week,
    /// The calendar month (UTC), from the 1st at midnight.
    Month,
}

impl Window {
    /// Every window, shortest first: the order of every per-window array (a budget's spend per
    /// window, the usage a reservation is decided on).
    pub const ALL: [Window; 4] = [Window::Hour, Window::Day, Window::Week, Window::Month];

    /// `hourly`, `daily`, `weekly` or `monthly`: the prefix of its limit's key
    /// (`hourly_sats`) and its name in declines and alerts.
    pub fn name(self) -> &'static str {
        match self {
            Window::Hour => "hourly",
            Window::Day => "daily",
            Window::Week => "weekly",
            Window::Month => "monthly",
        }
    }

    /// Unix seconds at which the window containing `now` started.
    pub fn start(self, now: i64) -> i64 {
        let Ok(t) = OffsetDateTime::from_unix_timestamp(now) else {
            return now;
        };
        let date = t.date();
        let start = match self {
            Window::Hour => date.with_hms(t.hour(), 0, 0).map(|d| d.assume_utc()),
            Window::Day => Ok(date.with_time(Time::MIDNIGHT).assume_utc()),
            Window::Week => {
                let back = date.weekday().number_days_from_monday() as i64;
                let monday = date.checked_sub(time::Duration::days(back)).unwrap_or(date);
                Ok(monday.with_time(Time::MIDNIGHT).assume_utc())
            }
            Window::Month => Date::from_calendar_date(date.year(), date.month(), 1)
                .map(|d| d.with_time(Time::MIDNIGHT).assume_utc()),
        };
        start.map(|s| s.unix_timestamp()).unwrap_or(now)
    }

    /// Unix seconds at which the window containing `now` ends (the next one starts).
    pub fn end(self, now: i64) -> i64 {
        let start = self.start(now);
        match self {
            Window::Hour => start + 3600,
            Window::Day => start + 86_400,
            Window::Week => start + 7 * 86_400,
            Window::Month => {
                let Ok(t) = OffsetDateTime::from_unix_timestamp(start) else {
                    return start + 31 * 86_400;
                };
                let (year, month) = match t.month() {
                    Month::December => (t.year() + 1, Month::January),
                    m => (t.year(), m.next()),
                };
                Date::from_calendar_date(year, month, 1)
                    .map(|d| d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp())
                    .unwrap_or(start + 31 * 86_400)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-21 (a Saturday) 14:05:10 UTC
    const T: i64 = 1_795_269_910;

    #[test]
    fn window_starts() {
        assert_eq!(Window::Hour.start(T), 1_795_269_600); // 14:00
        assert_eq!(Window::Day.start(T), 1_795_219_200); // 2026-11-21 00:00
        assert_eq!(Window::Week.start(T), 1_794_787_200); // Monday 2026-11-16
        assert_eq!(Window::Month.start(T), 1_793_491_200); // 2026-11-01
        assert_eq!(Window::Month.end(T), 1_796_083_200); // 2026-12-01
        assert_eq!(Window::Week.end(T), 1_794_787_200 + 7 * 86_400);
    }

    #[test]
    fn week_starts_monday_even_on_monday_and_sunday() {
        let monday = 1_794_787_200;
        assert_eq!(Window::Week.start(monday), monday);
        assert_eq!(Window::Week.start(monday + 7 * 86_400 - 1), monday);
        assert_eq!(Window::Week.start(monday + 7 * 86_400), monday + 7 * 86_400);
    }

    #[test]
    fn december_rolls_into_january() {
        let dec = 1_796_083_200 + 86_400 * 10; // 2026-12-11
        assert_eq!(Window::Month.end(dec), 1_798_761_600); // 2027-01-01
    }
}
