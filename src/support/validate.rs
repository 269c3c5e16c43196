//! The problems a config's values have, collected section by section so that one run of
//! `validate` reports all of them, each naming its key and what is expected.

/// Problems found so far, in the order the sections were checked.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    /// Records `message` unless `ok`.
    pub fn check(&mut self, ok: bool, message: String) {
        if !ok {
            self.0.push(message);
        }
    }

    pub fn push(&mut self, message: String) {
        self.0.push(message);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One line per problem (`  - key = value: expected ...`), or Ok when there is none.
    pub fn into_result(self) -> Result<(), String> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(self
            .0
            .iter()
            .map(|p| format!("  - {p}"))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// A finite number above zero.
pub fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// A finite number in [0, 1].
pub fn fraction(x: f64) -> bool {
    x.is_finite() && (0.0..=1.0).contains(&x)
}
