//! The emulator's clock (`--clock-offset`) and the date formats AWS speaks: SigV4's
//! `X-Amz-Date` basic format and the HTTP `Date` header.
//!
//! The offset stands for a node whose clock is wrong: the emulator plays AWS, whose clock is
//! right, so everything AWS dates itself (the signature's skew window, the `Date` header, the
//! token's `iat`) follows the shifted clock, while the client keeps the machine's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// "Now" as AWS sees it: the machine's clock shifted by `--clock-offset`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    /// Milliseconds added to the machine's clock (negative: AWS is behind the machine).
    pub offset_ms: i64,
}

impl Clock {
    pub fn now(&self) -> SystemTime {
        shift(SystemTime::now(), self.offset_ms)
    }

    /// Seconds since the Unix epoch, for the token's `iat`.
    pub fn now_secs(&self) -> i64 {
        unix_secs(self.now())
    }
}

/// `t` moved by `ms` milliseconds (clamped at the epoch).
pub fn shift(t: SystemTime, ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        t + d
    } else {
        t.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

pub fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of `days` since 1970-01-01: (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses SigV4's `X-Amz-Date`, ISO 8601 basic format `YYYYMMDDTHHMMSSZ`, strictly.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let (y, mo, d) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (h, mi, sec) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    let days_in_month = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=days_in_month).contains(&d) || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec;
    Some(shift(UNIX_EPOCH, secs.checked_mul(1000)?))
}

/// Formats `t` as `YYYYMMDDTHHMMSSZ` (whole seconds).
pub fn format_amz_date(t: SystemTime) -> String {
    let secs = unix_secs(t);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `(date, time)` of `t` in UTC: `YYYY-MM-DD`, `HH:MM:SS` (whole seconds).
fn utc_parts(t: SystemTime) -> (String, String) {
    let secs = unix_secs(t);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60),
    )
}

/// `YYYY-MM-DDTHH:MM:SS`, UTC without a zone: how License Manager's CheckoutLicense writes
/// `IssuedAt` and `Expiration`.
pub fn iso_local_seconds(t: SystemTime) -> String {
    let (date, time) = utc_parts(t);
    format!("{date}T{time}")
}

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC): how ExtendLicenseConsumption writes `Expiration`.
pub fn rfc3339(t: SystemTime) -> String {
    let (date, time) = utc_parts(t);
    format!("{date}T{time}Z")
}

/// Formats `t` as an HTTP date (RFC 9110 IMF-fixdate), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = unix_secs(t);
    let days = secs.div_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let s = secs.rem_euclid(86_400);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_round_trip_and_are_strict() {
        let t = parse_amz_date("20261201T123000Z").unwrap();
        assert_eq!(unix_secs(t), 1_796_128_200);
        assert_eq!(format_amz_date(t), "20261201T123000Z");
        assert_eq!(
            format_amz_date(parse_amz_date("20240229T235959Z").unwrap()),
            "20240229T235959Z"
        );
        assert_eq!(format_amz_date(UNIX_EPOCH), "19700101T000000Z");
        for bad in [
            "",
            "20261201T123000",
            "2026-12-01T12:30:00Z",
            "20261301T123000Z",
            "20230229T000000Z",
            "20261201T246000Z",
            "2026120lT123000Z",
            "20261201t123000Z",
            "+0261201T123000Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn license_manager_dates() {
        let t = shift(UNIX_EPOCH, 784_111_777_000);
        assert_eq!(iso_local_seconds(t), "1994-11-06T08:49:37");
        assert_eq!(rfc3339(t), "1994-11-06T08:49:37Z");
    }

    #[test]
    fn http_dates() {
        let t = shift(UNIX_EPOCH, 784_111_777_000);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn the_offset_shifts_now() {
        let ahead = Clock {
            offset_ms: 1_200_000,
        }
        .now_secs();
        let behind = Clock {
            offset_ms: -1_200_000,
        }
        .now_secs();
        let diff = ahead - behind;
        assert!((2399..=2401).contains(&diff), "{diff}");
    }
}
