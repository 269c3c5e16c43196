//! What a run shows people: `report.md`, the plots, the mistakes grid, and the text drawn on
//! those pictures.

pub mod markdown;
pub mod mistakes;
pub mod plots;
pub mod text;
