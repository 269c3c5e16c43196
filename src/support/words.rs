//! Numbers as people read them: `4,655,434 parameters`, `after 1 epoch`, `4 min 47 s`.

/// `4655434` as `4,655,434`.
pub fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` of `noun`: `1 epoch`, `2 epochs`, `50,000 images` (English plurals by `s`).
pub fn count(n: usize, noun: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{} {noun}{s}", group_thousands(n))
}

/// A duration: `45 s`, `4 min 47 s`, `3.9 h`.
pub fn human_duration(seconds: f64) -> String {
    if seconds < 59.5 {
        format!("{seconds:.0} s")
    } else if seconds < 3600.0 {
        let whole = seconds.round() as u64;
        format!("{} min {} s", whole / 60, whole % 60)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// Line numbers as a reader wants them: `line 3`, `lines 3, 5 and 9`, `lines 3, 5, 9 and 17
/// more` (at most ten named).
pub fn list_lines(lines: &[usize]) -> String {
    const NAMED: usize = 10;
    let named: Vec<String> = lines.iter().take(NAMED).map(usize::to_string).collect();
    match (lines.len(), named.split_last()) {
        (_, None) => "no line".into(),
        (1, _) => format!("line {}", named[0]),
        (n, _) if n > NAMED => format!("lines {} and {} more", named.join(", "), n - NAMED),
        (_, Some((last, first))) => format!("lines {} and {last}", first.join(", ")),
    }
}
