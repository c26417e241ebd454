//! When rotations start on their own: a cron expression read as crontab reads it, in a time zone.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A validated schedule. Times are computed in the plan's zone, so "03:00" stays 03:00 local
/// across daylight-saving changes; a local time that does not exist on a change day (02:30 in
/// spring in Europe) is skipped that day, one that happens twice (autumn) fires twice.
#[derive(Clone)]
pub struct Schedule {
    /// As the plan wrote it, for messages and status.
    expression: String,
    timezone: Tz,
    cron: cron::Schedule,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {})", self.expression, self.timezone)
    }
}

/// Why a schedule or time zone is refused; each quotes what the plan wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "{expression:?} has {count} fields: write 5 (minute hour day-of-month month \
         day-of-week), or 6 or 7 with seconds first and a year last"
    )]
    FieldCount { expression: String, count: usize },
    #[error(
        "{expression:?} restricts both day-of-month and day-of-week, which crontab reads as \
         either and keyrot as both: restrict only one"
    )]
    BothDayFields { expression: String },
    #[error(
        "{expression:?}: day-of-week numbers are ambiguous with a seconds field (crontab counts \
         Sunday as 0, Quartz as 1): use names such as SUN or MON-FRI"
    )]
    NumberedDays { expression: String },
    #[error("day-of-week step {step:?} is not a positive number")]
    Step { step: String },
    #[error("day-of-week {item:?}: a step needs a range or *")]
    StepWithoutRange { item: String },
    #[error("day-of-week range {range:?} runs backwards")]
    Backwards { range: String },
    #[error("day-of-week {number} is out of range: use 0-7 or SUN-SAT")]
    DayOutOfRange { number: usize },
    #[error("day-of-week {text:?} is not a day: use 0-7 or SUN-SAT")]
    NotADay { text: String },
    /// The cron crate's reason, when it gives one on a line of its own.
    #[error(
        "{expression:?} is not a valid cron expression{}",
        reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
    )]
    Cron {
        expression: String,
        reason: Option<String>,
    },
    #[error("unknown time zone {name:?}: use an IANA name such as Europe/Berlin or UTC")]
    UnknownZone { name: String },
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Schedule {
    /// Accepts the 5-field crontab form (`0 3 * * SUN`, day-of-week 0 and 7 both Sunday), the
    /// 6- and 7-field forms with seconds first and an optional year last, and `@daily`-style names.
    pub fn parse(expression: &str, timezone: Tz) -> Result<Schedule, ScheduleError> {
        let cron_text = to_cron_syntax(expression.trim())?;
        let cron =
            cron::Schedule::from_str(&cron_text).map_err(|err| cron_message(expression, &err))?;
        Ok(Schedule {
            expression: expression.to_string(),
            timezone,
            cron,
        })
    }

    /// The first time the schedule fires strictly after `after`; `None` if it never does again
    /// (a year field in the past).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        // The cron crate adds a second to `after` unchecked: at the end of the calendar (a state
        // file's far-future time) nothing fires, and nothing may panic.
        local.checked_add_signed(chrono::TimeDelta::seconds(1))?;
        self.cron
            .after(&local)
            .next()
            .map(|t| t.with_timezone(&Utc))
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }
}

/// An IANA zone name such as `Europe/Berlin` or `UTC`.
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name).map_err(|_| ScheduleError::UnknownZone {
        name: name.to_string(),
    })
}

/// The text the cron crate reads. It wants seconds first and numbers Sunday 1, while crontab
/// numbers it 0 (and 7): 5-field lines get a seconds field and their days of the week spelled
/// out as names, so `0 3 * * 0` means Sunday as every crontab user expects.
fn to_cron_syntax(expression: &str) -> Result<String, ScheduleError> {
    if expression.starts_with('@') {
        return Ok(expression.to_string());
    }
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let (day_of_month, day_of_week) = match fields.len() {
        5 => (fields[2], fields[4]),
        6 | 7 => (fields[3], fields[5]),
        count => {
            return Err(ScheduleError::FieldCount {
                expression: expression.to_string(),
                count,
            });
        }
    };
    // crontab runs when either day field matches, the cron crate only when both do.
    if is_restricted(day_of_month) && is_restricted(day_of_week) {
        return Err(ScheduleError::BothDayFields {
            expression: expression.to_string(),
        });
    }
    if fields.len() == 5 {
        let days = crontab_days(day_of_week)?;
        return Ok(format!("0 {} {days}", fields[..4].join(" ")));
    }
    // With seconds the crontab numbering cannot be told apart from the cron crate's (Sunday 1,
    // as in Quartz), so only names are accepted there.
    let numbered = day_of_week.split(',').any(|item| {
        item.split('/')
            .next()
            .is_some_and(|r| r.contains(|c: char| c.is_ascii_digit()))
    });
    if numbered {
        return Err(ScheduleError::NumberedDays {
            expression: expression.to_string(),
        });
    }
    Ok(fields.join(" "))
}

fn is_restricted(field: &str) -> bool {
    field != "*" && field != "?"
}

/// A crontab day-of-week field (`0`, `7`, `1-5`, `*/2`, `SAT,SUN`, `5-7`) as a list of names.
fn crontab_days(field: &str) -> Result<String, ScheduleError> {
    if !is_restricted(field) {
        return Ok(field.to_string());
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => match step.parse::<usize>() {
                Ok(step) if step > 0 => (range, step),
                _ => {
                    return Err(ScheduleError::Step {
                        step: step.to_string(),
                    });
                }
            },
            None => (item, 1),
        };
        let (first, last) = match range.split_once('-') {
            _ if range == "*" => (0, 6),
            Some((first, last)) => (weekday(first)?, weekday(last)?),
            None if step > 1 => {
                return Err(ScheduleError::StepWithoutRange {
                    item: item.to_string(),
                });
            }
            None => (weekday(range)?, weekday(range)?),
        };
        if first > last {
            return Err(ScheduleError::Backwards {
                range: range.to_string(),
            });
        }
        for day in (first..=last).step_by(step) {
            days[day % 7] = true;
        }
    }
    let names: Vec<&str> = (0..7).filter(|&d| days[d]).map(|d| DAY_NAMES[d]).collect();
    Ok(names.join(","))
}

/// 0-7 (0 and 7 are Sunday) or a three-letter name, as crontab reads a day of the week.
fn weekday(text: &str) -> Result<usize, ScheduleError> {
    if let Ok(number) = text.parse::<usize>() {
        return match number {
            0..=7 => Ok(number),
            _ => Err(ScheduleError::DayOutOfRange { number }),
        };
    }
    DAY_NAMES
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
        .ok_or_else(|| ScheduleError::NotADay {
            text: text.to_string(),
        })
}

/// The cron crate's error names the field on its last line, under the expression and a caret;
/// keep that line, since problems print one per line.
fn cron_message(expression: &str, err: &cron::error::Error) -> ScheduleError {
    let text = err.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    ScheduleError::Cron {
        expression: expression.to_string(),
        reason: lines
            .last()
            .filter(|_| lines.len() > 2)
            .map(|r| r.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    use super::*;

    fn berlin(expression: &str) -> Schedule {
        Schedule::parse(expression, chrono_tz::Europe::Berlin).unwrap()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn sunday_is_0_7_and_sun_in_the_five_field_form() {
        // Wednesday 2026-01-07, noon UTC.
        let after = utc(2026, 1, 7, 12, 0);
        for expression in ["0 3 * * 0", "0 3 * * 7", "0 3 * * SUN", "0 3 * * sun"] {
            let next = berlin(expression).next_after(after).unwrap();
            let local = next.with_timezone(&chrono_tz::Europe::Berlin);
            assert_eq!(local.weekday(), Weekday::Sun, "{expression}");
            assert_eq!((local.hour(), local.minute()), (3, 0), "{expression}");
            assert_eq!(local.day(), 11, "{expression}");
        }
    }

    #[test]
    fn weekday_ranges_and_steps_keep_crontab_meaning() {
        let after = utc(2026, 1, 3, 12, 0); // Saturday
        let days = |expression: &str| -> Vec<Weekday> {
            let schedule = Schedule::parse(expression, Tz::UTC).unwrap();
            let mut t = after;
            (0..7)
                .map(|_| {
                    t = schedule.next_after(t).unwrap();
                    t.weekday()
                })
                .collect()
        };
        use Weekday::*;
        assert_eq!(days("0 3 * * 1-5"), [Mon, Tue, Wed, Thu, Fri, Mon, Tue]);
        assert_eq!(days("0 3 * * 5-7"), [Sun, Fri, Sat, Sun, Fri, Sat, Sun]);
        assert_eq!(days("0 3 * * */2"), [Sun, Tue, Thu, Sat, Sun, Tue, Thu]);
        assert_eq!(days("0 3 * * SAT,0"), [Sun, Sat, Sun, Sat, Sun, Sat, Sun]);
    }

    #[test]
    fn six_and_seven_field_forms_are_accepted_with_day_names() {
        let after = utc(2026, 1, 7, 12, 0);
        let six = berlin("0 0 3 * * SUN").next_after(after).unwrap();
        let seven = berlin("0 0 3 * * SUN 2026").next_after(after).unwrap();
        assert_eq!(six, utc(2026, 1, 11, 2, 0));
        assert_eq!(seven, six);
        assert_eq!(berlin("0 0 3 * * SUN 2025").next_after(after), None);
        assert!(matches!(
            Schedule::parse("0 0 3 * * 0", Tz::UTC),
            Err(ScheduleError::NumberedDays { .. })
        ));
        assert!(Schedule::parse("0 0 3 * * MON-FRI/2", Tz::UTC).is_ok());
    }

    #[test]
    fn local_time_is_kept_across_daylight_saving_changes() {
        let schedule = berlin("0 3 * * SUN");
        // Winter (CET, UTC+1) then the first Sunday of summer time (CEST, UTC+2).
        assert_eq!(
            schedule.next_after(utc(2026, 3, 20, 0, 0)),
            Some(utc(2026, 3, 22, 2, 0))
        );
        assert_eq!(
            schedule.next_after(utc(2026, 3, 23, 0, 0)),
            Some(utc(2026, 3, 29, 1, 0))
        );
        // 02:30 does not exist on 2026-03-29 in Berlin: that day is skipped.
        let early = berlin("30 2 * * *");
        assert_eq!(
            early.next_after(utc(2026, 3, 28, 12, 0)),
            Some(utc(2026, 3, 30, 0, 30))
        );
    }

    #[test]
    fn next_is_strictly_after() {
        let schedule = Schedule::parse("0 3 * * *", Tz::UTC).unwrap();
        let at = utc(2026, 1, 1, 3, 0);
        assert_eq!(schedule.next_after(at), Some(utc(2026, 1, 2, 3, 0)));
        assert_eq!(
            schedule.next_after(at - chrono::TimeDelta::seconds(1)),
            Some(at)
        );
    }

    #[test]
    fn the_end_of_the_calendar_never_fires_rather_than_panics() {
        for zone in [
            Tz::UTC,
            chrono_tz::Pacific::Kiritimati,
            chrono_tz::Pacific::Pago_Pago,
        ] {
            let schedule = Schedule::parse("* * * * *", zone).unwrap();
            assert_eq!(schedule.next_after(DateTime::<Utc>::MAX_UTC), None);
            let near_the_end = DateTime::<Utc>::MAX_UTC - chrono::TimeDelta::hours(20);
            assert_eq!(schedule.next_after(near_the_end), None, "{zone}");
        }
    }

    #[test]
    fn nicknames_pass_through() {
        let schedule = Schedule::parse("@weekly", Tz::UTC).unwrap();
        assert_eq!(
            schedule
                .next_after(utc(2026, 1, 7, 0, 0))
                .unwrap()
                .weekday(),
            Weekday::Sun
        );
        assert_eq!(schedule.expression(), "@weekly");
        assert_eq!(schedule.timezone(), Tz::UTC);
    }

    #[test]
    fn bad_expressions_say_why_on_one_line() {
        let err = |e: &str| Schedule::parse(e, Tz::UTC).unwrap_err().to_string();
        assert!(err("0 3 * *").contains("has 4 fields"));
        assert!(err("0 3 1 * MON").contains("restrict only one"));
        assert!(err("0 3 * * 8").contains("out of range"));
        assert!(err("0 3 * * FRI-MON").contains("runs backwards"));
        assert_eq!(
            err("0 25 * * *"),
            "\"0 25 * * *\" is not a valid cron expression: Hours must be less than 23. ('25' specified.)"
        );
        assert!(!err("61 3 * * *").contains('\n'));
    }

    #[test]
    fn zones_are_iana_names() {
        assert_eq!(
            parse_timezone("Europe/Berlin"),
            Ok(chrono_tz::Europe::Berlin)
        );
        let unknown = parse_timezone("Europe/Berlim").unwrap_err();
        assert_eq!(
            unknown,
            ScheduleError::UnknownZone {
                name: "Europe/Berlim".into()
            }
        );
        assert!(unknown.to_string().starts_with("unknown time zone"));
    }
}
