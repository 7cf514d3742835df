//! Dates as pools send them: ISO 8601 (`2016-05-12T10:04:18.421Z`, an offset, or none) and the
//! .NET JSON form the documentation's samples and captured traffic use
//! (`"\/Date(1463047458421)\/"`, which JSON-decodes to `/Date(1463047458421)/`, with an optional
//! `+hhmm` offset that does not change the instant). Both become milliseconds since the epoch.

/// Milliseconds since 1970-01-01T00:00:00Z, or None if `s` is neither form.
pub fn parse_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    // (Also as still JSON-escaped text, `\/Date(…)\/`, should a script hold that.)
    let dotnet = s.strip_prefix("/Date(").and_then(|r| r.strip_suffix(")/"));
    let dotnet = dotnet.or_else(|| s.strip_prefix("\\/Date(").and_then(|r| r.strip_suffix(")\\/")));
    if let Some(inner) = dotnet {
        // The offset names the writer's zone; the number is already UTC. (A sign may lead.)
        let digits_from = usize::from(inner.starts_with('-'));
        let end = inner.get(digits_from..)?.find(['+', '-']).map_or(inner.len(), |i| i + digits_from);
        return inner.get(..end)?.parse().ok();
    }
    parse_iso(s)
}

fn parse_iso(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let frac = &s[at + 1..at + 1 + digits.min(3)];
        millis = frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32);
        at += 1 + digits;
    }
    let offset_minutes = match &s[at..] {
        "" | "Z" | "z" => 0,
        zone => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            sign * (digits[..2].parse::<i64>().ok()? * 60 + digits[2..].parse::<i64>().ok()?)
        }
    };
    let days = days_from_civil(year, month, day);
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60) * 1000) + millis)
}

/// `2026-11-27T17:00:00.000Z` for milliseconds since the epoch.
pub fn iso_utc(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (rest / 3_600_000, rest / 60_000 % 60, rest / 1000 % 60, rest % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + if m <= 2 { 1 } else { 0 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_give_the_same_instant() {
        // conversation.json's `created` and captured traffic's form.
        assert_eq!(parse_ms("/Date(1474932024822)/"), Some(1_474_932_024_822));
        assert_eq!(parse_ms("/Date(1463047458421+0200)/"), Some(1_463_047_458_421));
        assert_eq!(parse_ms("/Date(-1000)/"), Some(-1000));
        assert_eq!(parse_ms("\\/Date(1474932024822)\\/"), Some(1_474_932_024_822));
        assert_eq!(parse_ms("2016-09-26T23:20:24.822Z"), Some(1_474_932_024_822));
        assert_eq!(parse_ms("2016-09-27T01:20:24.822+02:00"), Some(1_474_932_024_822));
        assert_eq!(parse_ms("2016-09-26T23:20:24Z"), Some(1_474_932_024_000));
        assert_eq!(parse_ms("2016-09-26T23:20:24.8Z"), Some(1_474_932_024_800));
        for bad in [
            "",
            "yesterday",
            "/Date(abc)/",
            "/Date()/",
            "/Date(é)/",
            "/Date(-)/",
            "2016-13-01T00:00:00Z",
            "2016-09-26T23:20:24+2",
            "2016-09-26",
            "2016-09-26T23:20:24.é",
            "é016-09-26T23:20:24Z",
        ] {
            assert_eq!(parse_ms(bad), None, "{bad}");
        }
    }

    /// Any text at all gives a number or None, never a panic.
    #[test]
    fn never_panics() {
        let pieces = ["/Date(", ")/", "\\/", "-", "+", "é", "1", "0", "T", ":", ".", "Z", "2016-09-26", "23:20:24", " "];
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..(seed % 7) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let _ = parse_ms(&s);
        }
    }

    #[test]
    fn iso_round_trips() {
        for ms in [0, 1_474_932_024_822, 951_782_400_000 /* 2000-02-29 */, -86_400_000, 4_102_444_800_000] {
            assert_eq!(parse_ms(&iso_utc(ms)), Some(ms), "{}", iso_utc(ms));
        }
        assert_eq!(iso_utc(1_474_932_024_822), "2016-09-26T23:20:24.822Z");
    }
}
