//! How the checks ended, and the report `test-plugin` prints.

/// How one check of the scenario ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It held.
    Pass,
    /// It did not, and why.
    Fail(String),
    /// It could not be run, and why (a plugin that does not provision, or names no nodes).
    Skip(String),
}

/// One check and how it ended.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
}

/// Collects the checks as they end.
#[derive(Default)]
pub(super) struct Checks(pub(super) Vec<Check>);

impl Checks {
    pub(super) fn record(&mut self, name: &'static str, outcome: Result<(), String>) -> bool {
        let passed = outcome.is_ok();
        let outcome = match outcome {
            Ok(()) => Outcome::Pass,
            Err(why) => Outcome::Fail(why),
        };
        self.0.push(Check { name, outcome });
        passed
    }

    pub(super) fn skip(&mut self, names: &[&'static str], why: &str) {
        for name in names {
            self.0.push(Check {
                name,
                outcome: Outcome::Skip(why.to_string()),
            });
        }
    }
}

/// The report: a line per check and the closing count; whether every check passed or was
/// skipped.
pub fn report(checks: &[Check]) -> (String, bool) {
    let mut out = String::new();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for check in checks {
        match &check.outcome {
            Outcome::Pass => {
                passed += 1;
                out.push_str(&format!("PASS  {}\n", check.name));
            }
            Outcome::Fail(why) => {
                failed += 1;
                out.push_str(&format!("FAIL  {}: {why}\n", check.name));
            }
            Outcome::Skip(why) => {
                skipped += 1;
                out.push_str(&format!("SKIP  {}: {why}\n", check.name));
            }
        }
    }
    out.push_str(&format!(
        "{passed} passed, {failed} failed, {skipped} skipped\n"
    ));
    (out, failed == 0)
}
