//! An optimizer's account of its steps, as `steps.csv`, TensorBoard and the plots show it.
//! Each optimizer owns one table of columns (`OptimizerSettings::STEP_COLUMNS`): that table
//! alone gives the CSV header, how each value is written and read back on resume, and its
//! TensorBoard tag. An optimizer with no columns writes no `steps.csv`.

/// How a column's values are written (and so read back to the same text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A whole number.
    Count,
    /// A number with this many digits after the point (`{:.6}`).
    Fixed(usize),
    /// A number in scientific notation with this many digits after the point (`{:.6e}`).
    Exponent(usize),
    /// `true` or `false`.
    Flag,
    /// A word (no comma).
    Label,
}

/// One column of an optimizer's step log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub format: Format,
    /// Its TensorBoard tag (None: not sent there).
    pub tensorboard: Option<&'static str>,
    /// A wall time: it differs between two equal runs.
    pub wall_time: bool,
}

impl Column {
    pub const fn new(name: &'static str, format: Format) -> Self {
        Self {
            name,
            format,
            tensorboard: None,
            wall_time: false,
        }
    }

    /// The same column, also sent to TensorBoard as `tag`.
    pub const fn tag(self, tag: &'static str) -> Self {
        Self {
            tensorboard: Some(tag),
            ..self
        }
    }

    /// The same column, marked as a wall time.
    pub const fn time(self) -> Self {
        Self {
            wall_time: true,
            ..self
        }
    }
}

/// One value of a step's row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Count(usize),
    Number(f64),
    Flag(bool),
    Label(String),
}

impl Cell {
    /// The value as a number (a flag is 0 or 1; a label has none).
    pub fn number(&self) -> Option<f64> {
        match self {
            Cell::Count(n) => Some(*n as f64),
            Cell::Number(x) => Some(*x),
            Cell::Flag(b) => Some(f64::from(u8::from(*b))),
            Cell::Label(_) => None,
        }
    }

    /// The value as `format` writes it.
    pub fn format(&self, format: Format) -> String {
        match (self, format) {
            (Cell::Number(x), Format::Fixed(digits)) => format!("{x:.digits$}"),
            (Cell::Number(x), Format::Exponent(digits)) => format!("{x:.digits$e}"),
            (Cell::Count(n), _) => n.to_string(),
            (Cell::Flag(b), _) => b.to_string(),
            (Cell::Label(s), _) => s.clone(),
            (Cell::Number(x), _) => x.to_string(),
        }
    }

    /// A value `format` wrote (None: not one).
    pub fn parse(text: &str, format: Format) -> Option<Cell> {
        match format {
            Format::Count => text.parse().ok().map(Cell::Count),
            Format::Fixed(_) | Format::Exponent(_) => text.parse().ok().map(Cell::Number),
            Format::Flag => text.parse().ok().map(Cell::Flag),
            Format::Label => {
                (!text.is_empty() && !text.contains(',')).then(|| Cell::Label(text.to_string()))
            }
        }
    }
}

/// A step's row: one cell per column of its optimizer's table, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub columns: &'static [Column],
    pub cells: Vec<Cell>,
}

impl StepRecord {
    /// The row; `cells` must match `columns` one for one.
    pub fn new(columns: &'static [Column], cells: Vec<Cell>) -> Self {
        assert_eq!(
            columns.len(),
            cells.len(),
            "a step record has one cell per column"
        );
        Self { columns, cells }
    }

    /// The value of column `name` as a number.
    pub fn number(&self, name: &str) -> Option<f64> {
        let at = self.columns.iter().position(|c| c.name == name)?;
        self.cells[at].number()
    }

    /// The TensorBoard scalars of the row.
    pub fn scalars(&self) -> Vec<(&'static str, f32)> {
        self.columns
            .iter()
            .zip(&self.cells)
            .filter_map(|(column, cell)| Some((column.tensorboard?, cell.number()? as f32)))
            .collect()
    }
}
