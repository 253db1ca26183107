//! The renderers: each reads the finished model (`crate::summary`) and
//! writes one form of it: [`csv`] (`timeline.csv`), [`markdown`]
//! (`report.md`), [`html`] (`report.html`, with [`chart`]'s SVG charts),
//! [`junit`] (`junit.xml`), [`bmf`] (`bmf.json`) and [`table`] (the
//! terminal), with the words they share in [`text`]. [`files`] writes them
//! where they belong. Renderers decide nothing: a verdict, a comparison or
//! a capacity estimate comes from `crate::analysis`.

pub mod bmf;
pub mod chart;
pub mod csv;
pub mod files;
#[cfg(test)]
mod fixture;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod table;
pub mod text;
