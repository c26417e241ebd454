//! Placeholder replaced by the plan work: cron schedule in a time zone.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    timezone: chrono_tz::Tz,
    cron: cron::Schedule,
}

impl Schedule {
    pub fn expression(&self) -> &str {
        &self.expression
    }
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.timezone
    }
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .after(&after.with_timezone(&self.timezone))
            .next()
            .map(|t| t.with_timezone(&Utc))
    }
}
