//! The results of a comparison: samples per metric and server, their medians and ratios, and
//! the markdown table that `compare` prints and `docs/benchmarks.md` shows.

use std::fmt::Write as _;

use crate::process::Kind;

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// The labels of the load rows, shared by the scenarios, the targets and the chart.
pub fn rate(scenario: &str) -> String {
    format!("{scenario}: messages/s")
}
pub fn cpu_per_message(scenario: &str) -> String {
    format!("{scenario}: server CPU µs/message")
}
pub fn throughput(scenario: &str) -> String {
    format!("{scenario}: MB/s")
}
pub fn cpu_per_mb(scenario: &str) -> String {
    format!("{scenario}: server CPU µs/MB")
}

/// One metric: a sample per round for each server (empty where a server was not measured).
struct Row {
    label: String,
    better: Better,
    samples: [Vec<f64>; 3],
}

/// Every metric of a run, in the order they were first added.
#[derive(Default)]
pub struct Table {
    rows: Vec<Row>,
}

impl Table {
    pub fn add(&mut self, label: &str, better: Better, kind: Kind, value: f64) {
        let row = match self.rows.iter().position(|row| row.label == label) {
            Some(index) => &mut self.rows[index],
            None => {
                self.rows.push(Row {
                    label: label.to_string(),
                    better,
                    samples: Default::default(),
                });
                let last = self.rows.len() - 1;
                &mut self.rows[last]
            }
        };
        row.samples[index(kind)].push(value);
    }

    /// The median of a metric's samples for `kind`, if it has any.
    pub fn median(&self, label: &str, kind: Kind) -> Option<f64> {
        let row = self.rows.iter().find(|row| row.label == label)?;
        median(&row.samples[index(kind)])
    }

    /// `kind`'s median over `other`'s.
    pub fn ratio(&self, label: &str, kind: Kind, other: Kind) -> Option<f64> {
        let denominator = self.median(label, other)?;
        (denominator != 0.0).then_some(self.median(label, kind)? / denominator)
    }

    /// netgrace's advantage over `other` on a metric: above 1 means netgrace is better,
    /// whichever way the metric improves.
    pub fn advantage(&self, label: &str, other: Kind) -> Option<f64> {
        let ratio = self.ratio(label, Kind::Netgrace, other)?;
        let better = self.rows.iter().find(|row| row.label == label)?.better;
        match better {
            Better::Higher => Some(ratio),
            Better::Lower => (ratio != 0.0).then_some(1.0 / ratio),
        }
    }

    /// The markdown table: medians, then netgrace's ratio to each tokio flavour.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| metric | netgrace | tokio-ct | tokio-mt | netgrace ÷ tokio-ct | netgrace ÷ tokio-mt |\n\
             |---|--:|--:|--:|--:|--:|\n",
        );
        for row in &self.rows {
            let arrow = match row.better {
                Better::Higher => "↑",
                Better::Lower => "↓",
            };
            let cell = |kind: Kind| median(&row.samples[index(kind)]).map_or("–".into(), number);
            let ratio = |other: Kind| {
                self.ratio(&row.label, Kind::Netgrace, other)
                    .map_or("–".into(), |r| format!("{r:.2}"))
            };
            let _ = writeln!(
                out,
                "| {} {arrow} | {} | {} | {} | {} | {} |",
                row.label,
                cell(Kind::Netgrace),
                cell(Kind::TokioCt),
                cell(Kind::TokioMt),
                ratio(Kind::TokioCt),
                ratio(Kind::TokioMt),
            );
        }
        out
    }
}

fn index(kind: Kind) -> usize {
    match kind {
        Kind::Netgrace => 0,
        Kind::TokioCt => 1,
        Kind::TokioMt => 2,
    }
}

/// The middle sample, or the mean of the middle two.
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// A figure with as many digits as it deserves, thousands separated by a thin space.
pub fn number(value: f64) -> String {
    let abs = value.abs();
    if abs >= 1000.0 {
        let digits = format!("{:.0}", value.abs());
        let mut grouped = String::new();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push('\u{2009}');
            }
            grouped.push(digit);
        }
        return if value < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        };
    }
    match abs {
        _ if abs >= 100.0 => format!("{value:.0}"),
        _ if abs >= 10.0 => format!("{value:.1}"),
        _ => format!("{value:.2}"),
    }
}
