//! One layer as a config writes it: its kind, an optional value, then `key=value` options,
//! separated by spaces: `"conv 64"`, `"conv 32 padding=none"`, `"max-pool 2"`, `"linear 64"`.
//! Each layer's `build` takes what it understands; `finish` refuses what nobody took.

#[derive(Debug)]
pub struct LayerSpec<'a> {
    pub kind: &'a str,
    value: Option<&'a str>,
    value_taken: bool,
    options: Vec<(&'a str, &'a str, bool)>,
}

impl<'a> LayerSpec<'a> {
    pub fn parse(text: &'a str) -> Result<Self, String> {
        let mut words = text.split_whitespace();
        let kind = words
            .next()
            .ok_or_else(|| "an empty layer: expected a kind such as \"conv 64\"".to_string())?;
        let mut value = None;
        let mut options = Vec::new();
        for word in words {
            match word.split_once('=') {
                Some((key, v)) if !key.is_empty() && !v.is_empty() => {
                    if options.iter().any(|(k, _, _)| *k == key) {
                        return Err(format!("option `{key}` is given twice"));
                    }
                    options.push((key, v, false));
                }
                Some(_) => return Err(format!("`{word}`: expected key=value")),
                None if value.is_none() && options.is_empty() => value = Some(word),
                None => {
                    return Err(format!(
                        "`{word}`: expected key=value (only the first word after the kind is \
                         a plain value)"
                    ));
                }
            }
        }
        Ok(Self {
            kind,
            value,
            value_taken: false,
            options,
        })
    }

    /// The value after the kind, which this layer requires: `what` says what it means.
    pub fn required<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, String> {
        let example = format!("\"{} <{what}>\"", self.kind);
        let Some(text) = self.value else {
            return Err(format!("{} needs its {what}: {example}", self.kind));
        };
        self.value_taken = true;
        text.parse()
            .map_err(|_| format!("`{text}`: expected the {what} as a number: {example}"))
    }

    /// The value after the kind, or `default` where the config leaves it out.
    pub fn value_or<T: std::str::FromStr>(&mut self, what: &str, default: T) -> Result<T, String> {
        if self.value.is_none() {
            return Ok(default);
        }
        self.required(what)
    }

    /// The text of option `key`, if given.
    pub fn option(&mut self, key: &str) -> Option<&'a str> {
        let (_, value, taken) = self.options.iter_mut().find(|(k, _, _)| *k == key)?;
        *taken = true;
        Some(value)
    }

    /// Option `key` as a number, or `default`.
    pub fn number<T: std::str::FromStr>(&mut self, key: &str, default: T) -> Result<T, String> {
        match self.option(key) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("{key}={text}: expected a whole number")),
        }
    }

    /// Option `key` as `true` or `false`, or `default`.
    pub fn flag(&mut self, key: &str, default: bool) -> Result<bool, String> {
        match self.option(key) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(format!("{key}={other}: expected true or false")),
        }
    }

    /// Refuses a value or option the layer did not take; `usage` shows what it takes.
    pub fn finish(&self, usage: &str) -> Result<(), String> {
        if let (Some(value), false) = (self.value, self.value_taken) {
            return Err(format!(
                "`{value}`: {} takes no value; usage: {usage}",
                self.kind
            ));
        }
        if let Some((key, _, _)) = self.options.iter().find(|(_, _, taken)| !taken) {
            return Err(format!("unknown option `{key}`; usage: {usage}"));
        }
        Ok(())
    }
}
