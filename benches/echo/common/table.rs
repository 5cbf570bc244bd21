//! A comparison's samples per metric and server, their medians and ratios, the markdown table.

use std::fmt::Write as _;

use super::process::Kind;

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

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

/// Every metric, in the order first added: label, which way is better, each server's samples.
#[derive(Default)]
pub struct Table {
    rows: Vec<(String, Better, [Vec<f64>; 3])>,
}

impl Table {
    pub fn add(&mut self, label: &str, better: Better, kind: Kind, value: f64) {
        if !self.rows.iter().any(|(l, ..)| l == label) {
            self.rows
                .push((label.to_string(), better, Default::default()));
        }
        if let Some((.., samples)) = self.rows.iter_mut().find(|(l, ..)| l == label) {
            samples[kind as usize].push(value);
        }
    }

    fn samples(&self, label: &str, kind: Kind) -> Option<(Better, &[f64])> {
        let (_, better, samples) = self.rows.iter().find(|(l, ..)| l == label)?;
        Some((*better, &samples[kind as usize]))
    }

    pub fn better(&self, label: &str) -> Option<Better> {
        Some(self.samples(label, Kind::Netgrace)?.0)
    }

    pub fn median(&self, label: &str, kind: Kind) -> Option<f64> {
        median(self.samples(label, kind)?.1)
    }

    /// The worst sample of `kind`, for a target that every round must meet.
    pub fn worst(&self, label: &str, kind: Kind) -> Option<f64> {
        let (better, samples) = self.samples(label, kind)?;
        let samples = samples.iter().copied();
        match better {
            Better::Higher => samples.reduce(f64::min),
            Better::Lower => samples.reduce(f64::max),
        }
    }

    pub fn ratio(&self, label: &str, kind: Kind, other: Kind) -> Option<f64> {
        let denominator = self.median(label, other).filter(|d| *d != 0.0)?;
        Some(self.median(label, kind)? / denominator)
    }

    /// The markdown table: medians, then netgrace's ratio to each tokio flavour.
    pub fn markdown(&self) -> String {
        let mut out = String::from("| metric | netgrace | tokio-ct | tokio-mt | netgrace ÷ ");
        out.push_str("tokio-ct | netgrace ÷ tokio-mt |\n|---|--:|--:|--:|--:|--:|\n");
        for (label, better, samples) in &self.rows {
            let arrow = [" ↓", " ↑"][usize::from(*better == Better::Higher)];
            let medians = samples.iter().map(|s| median(s).map_or("–".into(), number));
            let ratio = |other| self.ratio(label, Kind::Netgrace, other);
            let ratios = [Kind::TokioCt, Kind::TokioMt].map(ratio);
            let ratios = ratios.map(|r| r.map_or("–".into(), |r| format!("{r:.2}")));
            let cells: Vec<String> = medians.chain(ratios).collect();
            let _ = writeln!(out, "| {label}{arrow} | {} |", cells.join(" | "));
        }
        out
    }
}

/// The middle sample, or the mean of the middle two.
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ => Some((sorted[(n - 1) / 2] + sorted[n / 2]) / 2.0),
    }
}

/// A figure with as many digits as it deserves, thousands separated by a thin space.
pub fn number(value: f64) -> String {
    let digits = [2, 1, 0][usize::from(value.abs() >= 10.0) + usize::from(value.abs() >= 100.0)];
    let text = format!("{value:.digits$}");
    // Only whole numbers from 1 000 up: no decimal point to count from.
    let gap = |i: usize| i > usize::from(value < 0.0) && (text.len() - i) % 3 == 0;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if value.abs() >= 1000.0 && gap(i) {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}
